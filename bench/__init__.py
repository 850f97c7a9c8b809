"""Benchmarks of pybuild against buildah and docker (issue 6): `python -m bench`, see __main__.py."""
