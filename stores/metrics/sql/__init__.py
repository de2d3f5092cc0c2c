"""Every SQL statement of the metrics store, one module per backend.

`native` and `timescale` each hold one backend's DDL and writes; `common` holds
the read statements, rendered once per backend with its bucketing function.
"""

from stores.metrics.sql.common import Dialect, SetupStep
from stores.metrics.sql.native import NATIVE
from stores.metrics.sql.timescale import TIMESCALE

__all__ = ["NATIVE", "TIMESCALE", "Dialect", "SetupStep"]
