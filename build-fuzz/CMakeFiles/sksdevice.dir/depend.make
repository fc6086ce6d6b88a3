# Empty dependencies file for sksdevice.
# This may be replaced when dependencies are built.
