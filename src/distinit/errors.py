"""User-facing errors: the CLI prints these as one message, without a traceback."""


class UserError(Exception):
    """Bad input (file, config, data, weights). The message says what is wrong and what to do."""
