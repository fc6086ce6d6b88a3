# Empty compiler generated dependencies file for skstransport.
# This may be replaced when dependencies are built.
