# Empty dependencies file for fuzz_wire.
# This may be replaced when dependencies are built.
