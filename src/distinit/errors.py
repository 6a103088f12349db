"""User-facing errors: the CLI prints these as one message, without a traceback."""


class UserError(Exception):
    """Bad input (file, config, data, weights). The message says what is wrong and what to do."""


def first_line(error: BaseException) -> str:
    """`TypeName: the first line of its message`, for a foreign exception quoted in one line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """The message of `error` as the user should see it.

    An error raised inside a DataLoader worker reaches the main process re-raised with the
    worker's traceback inside its message ("Caught X in DataLoader worker process 0. Original
    Traceback ..."); its last line is the original message, which is what the user needs.
    """
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        name, sep, message = last.partition(": ")
        text = message if sep and name.endswith(("Error", "Exception")) else last
    return text
