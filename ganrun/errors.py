"""The exception types for problems a user can fix or must know about, each printed
by ``ganrun`` as one line (``ganrun: error: ...``)."""


class ConfigError(ValueError):
    """A bad value or a combination that cannot work; the message is one line naming
    the bad value and the valid choices."""


class TrainingDiverged(RuntimeError):
    """Training was stopped by the divergence guard (NaN/Inf, or D winning completely);
    the message names the G update, the likely cause and the last good checkpoint.
    ``ganrun`` exits with status 3 (``EXIT_DIVERGED``)."""


EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
