# SmartCard-HSM key management (schsm/manage.h): the hsm* project extensions, answered with
# the card's APDUs; linked into the driver (schsm/driver.c hands it those method ids).
add_library(sksschsmmanage STATIC
  ${CMAKE_CURRENT_LIST_DIR}/manage.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_apdu.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_data.c
  ${CMAKE_CURRENT_LIST_DIR}/generate.c
  ${CMAKE_CURRENT_LIST_DIR}/initialize.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_dkek.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_attest.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_domain.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_xkek.c
  ${CMAKE_CURRENT_LIST_DIR}/mgmt_migrate.c)
# backup, restore and migration read PrKDs, blobs and CV requests with the host-side format library
target_include_directories(sksschsmmanage PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(sksschsmmanage PUBLIC skswire sksschsmfmt OpenSSL::Crypto)
