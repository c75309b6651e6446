"""The one base class of mistakes a user can make (a bad file, option, spec or checkpoint): the
CLI prints such an error as one line and exits with code 2, without a traceback (``-v`` shows it)."""


class UserError(Exception):
    """Bad input from the user, explained by the message alone."""


class ConfigError(UserError, ValueError):
    """An option a config dataclass does not know, or a config file that cannot be read."""
