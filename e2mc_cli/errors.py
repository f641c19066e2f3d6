"""The one exception type that reaches users as a single clear line (exit code 2)."""


class UserError(Exception):
    """Bad input from the user: a wrong name, a missing file, an unusable checkpoint.

    The CLI prints ``error: <message>`` on stderr and exits with code 2, without a traceback.
    """
