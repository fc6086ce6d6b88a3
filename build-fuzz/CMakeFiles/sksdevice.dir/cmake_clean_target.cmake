file(REMOVE_RECURSE
  "libsksdevice.a"
)
