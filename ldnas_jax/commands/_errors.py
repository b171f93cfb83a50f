"""Which errors are the user's to fix: the command line reports them in one line, no traceback.

While a command checks its arguments (``check``), every error of :data:`USER_ERRORS` is the
user's: a bad flag, an unknown task or model, an unreadable input file, a run directory that
does not fit, a data set that can be neither read nor downloaded. While it runs
(``execute``), only :data:`RUN_ERRORS` are (a saved run that does not fit its arguments, a
data set read late that is not there); anything else there is a failure worth its traceback.
"""

from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.data import DataSourceError


class UsageError(Exception):
    """A command line argparse refuses (unknown flag, bad value, missing command)."""


USER_ERRORS = (
    ValueError, TypeError, KeyError, OSError, CheckpointError, DataSourceError, UsageError
)
RUN_ERRORS = (CheckpointError, DataSourceError)
