# Empty dependencies file for sq_test_util.
# This may be replaced when dependencies are built.
