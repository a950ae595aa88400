"""The one exception type for problems a user can fix from the command line."""


class ConfigError(ValueError):
    """A bad value or a combination that cannot work; the message is one line naming
    the bad value and the valid choices."""
