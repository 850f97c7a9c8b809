"""tests/httpserve.py re-raises a handler thread's failure in the test thread (an assert there is not lost)."""
import urllib.request, pytest
from tests.httpserve import Handler, serving
class Bad(Handler):
    def do_GET(self):
        assert self.path == "/good", self.path
        self.reply(200, b"ok")
def test_handler_assert_fails_the_test():
    with pytest.raises(AssertionError, match="the test server's handler failed"):
        with serving(Bad) as host:
            try:
                urllib.request.urlopen(f"http://{host}/bad", timeout=10).read()
            except Exception:
                pass
