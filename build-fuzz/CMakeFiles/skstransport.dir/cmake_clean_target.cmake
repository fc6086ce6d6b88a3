file(REMOVE_RECURSE
  "libskstransport.a"
)
