# Empty dependencies file for sks.
# This may be replaced when dependencies are built.
