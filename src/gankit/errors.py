"""The one exception type a user can cause; the CLI turns it into exit code 2 and one message."""


class GankitError(Exception):
    """An error caused by the user's input (config, data, files); the message says how to fix it."""
