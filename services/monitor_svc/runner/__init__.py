"""The runner: a process that checks the monitors MonitorService assigns it and reports the results."""
