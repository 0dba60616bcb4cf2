"""The runner fleet: the port through which the monitor service sees and sizes wherever its runners run
(:mod:`.port`), the reconciler that keeps it sized to the monitors (:mod:`.reconciler`), and the Kubernetes
adapter (:mod:`.kubernetes`)."""
