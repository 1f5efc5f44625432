"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
import re


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (\\n, \\x1b): an error names files from the user's
    folders, and a file name holding a newline or a terminal escape sequence must neither break the one line
    nor drive the terminal (clear it, recolour it, fake a message)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong shape, a malformed config."""


class QueryBudgetExceeded(Exception):
    """A black-box attack tried to spend more queries than its budget allows."""


class TimeBudgetExceeded(Exception):
    """A threat ran past its time budget."""


class Malformed(ValueError):
    """A file mlwarden reads back (a report, a finding, a watermark registry) that is not what it writes;
    the message is one line naming the field."""


def first_error(e) -> str:
    """A pydantic ValidationError in one line: the first problem's field path and message, and how many more."""
    errs = e.errors()
    if not errs:
        return str(e).splitlines()[0]
    err = errs[0]
    loc = ".".join(str(p) for p in err["loc"]) or "the document"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    msg = re.sub(r" or instance of \w+$", "", msg.removeprefix("Value error, "))   # no class names of ours
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {msg}{more}"
