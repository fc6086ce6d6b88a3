file(REMOVE_RECURSE
  "libskswire.a"
)
