raise RuntimeError("database not reachable")
