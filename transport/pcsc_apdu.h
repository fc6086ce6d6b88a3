/*
 * The SKS command set in APDUs (docs/pcsc.md): what the pcsc: transport sends and what an SKS
 * card (tools/sks-vcard) answers. One header, so client and card cannot drift apart.
 */
#ifndef SKS_PCSC_APDU_H
#define SKS_PCSC_APDU_H

/* A proprietary AID: 'F' in the first nibble marks an unregistered RID (ISO/IEC 7816-5);
 * then "SKS" and the protocol version 1. */
#define SKS_AID_BYTES 0xF0, 0x53, 0x4B, 0x53, 0x00, 0x01
#define SKS_AID_LEN 6

#define SKS_CLA_ISO 0x00
#define SKS_CLA_PROPRIETARY 0x80
#define SKS_CLA_CHAIN 0x10 /* ISO 7816-4 command chaining: "more parts follow" */

#define SKS_INS_SELECT 0xA4
#define SKS_INS_GET_RESPONSE 0xC0
#define SKS_INS_CALL 0x10 /* data = (a part of) one request in the SKS byte stream */

/* SELECT response: version, flags, then three big-endian uint32 limits. */
#define SKS_SELECT_VERSION 1
#define SKS_SELECT_FLAG_EXTENDED 0x01 /* the card takes extended-length APDUs */
#define SKS_SELECT_RESPONSE_LEN 14

/* Largest request a card assembles from chained parts (the wire format's frame limit). */
#define SKS_APDU_MAX_REQUEST (16u * 1024 * 1024)

/* Status words. */
#define SKS_SW_OK 0x9000
#define SKS_SW_MORE 0x6100               /* 61xx: xx more bytes (00: 256 or more); GET RESPONSE */
#define SKS_SW_WRONG_LENGTH 0x6700
#define SKS_SW_CHANNEL_UNSUPPORTED 0x6881
#define SKS_SW_SM_UNSUPPORTED 0x6882
#define SKS_SW_CHAIN_UNSUPPORTED 0x6884
#define SKS_SW_NOT_SELECTED 0x6985       /* conditions of use: the SKS application is not selected */
#define SKS_SW_NO_RESPONSE 0x6985        /* GET RESPONSE with nothing pending (same value) */
#define SKS_SW_WRONG_DATA 0x6A80
#define SKS_SW_NOT_FOUND 0x6A82          /* SELECT: no such application */
#define SKS_SW_TOO_LARGE 0x6A84          /* the chained request exceeds SKS_APDU_MAX_REQUEST */
#define SKS_SW_WRONG_P1P2 0x6A86
#define SKS_SW_INS_UNSUPPORTED 0x6D00
#define SKS_SW_CLA_UNSUPPORTED 0x6E00
#define SKS_SW_INTERNAL 0x6F00           /* the card could not form a reply (out of memory) */

#endif
