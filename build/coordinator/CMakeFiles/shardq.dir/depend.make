# Empty dependencies file for shardq.
# This may be replaced when dependencies are built.
