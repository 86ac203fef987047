# Empty dependencies file for sq_coordinator.
# This may be replaced when dependencies are built.
