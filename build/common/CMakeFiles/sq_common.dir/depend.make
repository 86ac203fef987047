# Empty dependencies file for sq_common.
# This may be replaced when dependencies are built.
