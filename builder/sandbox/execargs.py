"""What the RUN's command is executed with (runc's exec.LookPath and execve checks), and how init's failures to
execute it are told: ExecError with docker's exit codes. Imported by builder/sandbox/init.py before pivot_root."""
from __future__ import annotations

import os
import stat

EXIT_SETUP = 125  # docker's "the container could not be started"
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


class ExecError(Exception):
    """argv[0] cannot be executed; the message reads like runc's."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exec_arguments(argv: tuple[str, ...], env: list[str]) -> tuple[list[str], dict[str, str]]:
    """execve's argv and environment; ExecError naming the entry execve cannot take (NUL byte, empty name)."""
    for index, arg in enumerate(argv):
        if "\0" in arg:
            raise ExecError(f"argument {index} of the command contains a NUL byte: {_shown(arg)}", EXIT_CANNOT_EXEC)
    environ = {}
    for item in env:
        key, _, value = item.partition("=")
        if not key or "\0" in item:
            problem = "has an empty name" if not key else "contains a NUL byte"
            raise ExecError(f"environment entry {_shown(item)} {problem}", EXIT_CANNOT_EXEC)
        environ[key] = value
    return list(argv), environ


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def find_executable(name: str, path_env: str) -> str:
    """Go's exec.LookPath as runc uses it: a name with "/" is used as is, otherwise search PATH."""
    if "/" in name:
        problem = _executable_problem(name)
        if problem is not None:
            raise ExecError(f'exec: "{name}": {problem}', EXIT_NOT_FOUND if "no such" in problem
                            else EXIT_CANNOT_EXEC)
        return name
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", name)
        if _executable_problem(candidate) is None:
            return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH', EXIT_NOT_FOUND)


def _executable_problem(path: str) -> str | None:
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"stat {path}: {(exc.strerror or '').lower()}"
    if stat.S_ISDIR(info.st_mode) or not info.st_mode & 0o111:
        return f"stat {path}: permission denied" if not stat.S_ISDIR(info.st_mode) else f"{path}: is a directory"
    return None
