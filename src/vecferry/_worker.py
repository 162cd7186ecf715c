"""Imported by the forkserver that vecferry's worker processes fork from, before the modules
they run: what is settled here is settled once, for every worker."""

from vecferry.stream import skip_pandas_probe

skip_pandas_probe()
