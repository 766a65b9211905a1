"""The one exception type the CLI turns into a single error line and a non-zero exit."""


class TlabError(Exception):
    """Bad input or an unusable environment: the message is shown to the user as is, without a traceback."""

    exit_code = 2
