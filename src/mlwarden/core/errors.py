"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong shape, a malformed config."""


class QueryBudgetExceeded(Exception):
    """A black-box attack tried to spend more queries than its budget allows."""


class TimeBudgetExceeded(Exception):
    """A threat ran past its time budget."""
