/*
 * libFuzzer target for the PC/SC link (transport/pcsc_link.c) and the card protocols on it
 * (transport/sks_card.c, transport/pcsc_schsm.c with the driver): a fuzzed card answers every
 * APDU, and a fuzzed pcscd resets or loses it at any point. The link's reading of card answers
 * (61xx and GET RESPONSE, 6Cxx, SELECT answers, chaining) and its recovery must hold up.
 *
 * pcsc-lite is replaced by the functions below, so no pcscd is needed. Input: one byte of
 * options (bit 0: the reader reports short APDUs only; bit 1: the second and fourth requests are
 * enumerateKeys instead of a long signHashedData), then the script the fake pcscd reads
 * from each time it is asked: for SCardBeginTransaction and SCardTransmit one event byte (see
 * next_event), and for an answered APDU a 2-byte big-endian length and the response APDU.
 *
 * Checked: every APDU goes out inside a transaction and is well-formed in length; a reconnect
 * happens outside a transaction, and after it the first APDU is a SELECT (the protocol
 * re-selects before anything else); replies stay within the frame limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <PCSC/reader.h>
#include <PCSC/winscard.h>

#include "../transport/pcsc_link.h"

const SCARD_IO_REQUEST g_rgSCardT0Pci = { SCARD_PROTOCOL_T0, sizeof(SCARD_IO_REQUEST) };
const SCARD_IO_REQUEST g_rgSCardT1Pci = { SCARD_PROTOCOL_T1, sizeof(SCARD_IO_REQUEST) };

static const char READERS[] = "Fuzz Reader 00\0Fuzz Reader 01\0";

static struct {
    const uint8_t *p;
    size_t n;
    int short_reader;
    int connected, in_transaction;
    int reset_pending;      /* the card was reset: W_RESET_CARD until SCardReconnect */
    int select_expected;    /* reconnected: the next APDU must be a SELECT */
} card;

static int take(uint8_t *b)
{
    if (card.n == 0)
        return 0;
    *b = *card.p++;
    card.n--;
    return 1;
}

/* What pcscd says next: success, or the card reset, removed or gone quiet. An exhausted script
 * is a card pulled out, so every run ends. */
static LONG next_event(void)
{
    uint8_t b;

    if (card.reset_pending)
        return SCARD_W_RESET_CARD;
    if (!take(&b))
        return SCARD_W_REMOVED_CARD;
    switch (b % 16) {
    case 13:
        card.reset_pending = 1;
        return SCARD_W_RESET_CARD;
    case 14:
        return SCARD_W_REMOVED_CARD;
    case 15:
        return SCARD_E_NOT_TRANSACTED;
    default:
        return SCARD_S_SUCCESS;
    }
}

LONG SCardEstablishContext(DWORD scope, LPCVOID r1, LPCVOID r2, LPSCARDCONTEXT ctx)
{
    (void)scope;
    (void)r1;
    (void)r2;
    *ctx = 1;
    return SCARD_S_SUCCESS;
}

LONG SCardReleaseContext(SCARDCONTEXT ctx)
{
    (void)ctx;
    return SCARD_S_SUCCESS;
}

LONG SCardListReaders(SCARDCONTEXT ctx, LPCSTR groups, LPSTR names, LPDWORD len)
{
    (void)ctx;
    (void)groups;
    if (names != NULL) {
        if (*len < sizeof(READERS))
            return SCARD_E_INSUFFICIENT_BUFFER;
        memcpy(names, READERS, sizeof(READERS));
    }
    *len = sizeof(READERS);
    return SCARD_S_SUCCESS;
}

LONG SCardConnect(SCARDCONTEXT ctx, LPCSTR reader, DWORD share, DWORD protocols, LPSCARDHANDLE card_out,
                  LPDWORD protocol)
{
    (void)ctx;
    (void)reader;
    (void)share;
    (void)protocols;
    card.connected = 1;
    card.reset_pending = 0;
    card.in_transaction = 0;
    *card_out = 7;
    *protocol = SCARD_PROTOCOL_T1;
    return SCARD_S_SUCCESS;
}

LONG SCardReconnect(SCARDHANDLE h, DWORD share, DWORD protocols, DWORD init, LPDWORD protocol)
{
    (void)h;
    (void)share;
    (void)protocols;
    (void)init;
    if (!card.connected || card.in_transaction)
        abort();
    card.reset_pending = 0;
    card.select_expected = 1;
    *protocol = SCARD_PROTOCOL_T1;
    return SCARD_S_SUCCESS;
}

LONG SCardDisconnect(SCARDHANDLE h, DWORD disposition)
{
    (void)h;
    (void)disposition;
    card.connected = 0;
    card.in_transaction = 0;
    card.select_expected = 0;
    return SCARD_S_SUCCESS;
}

LONG SCardBeginTransaction(SCARDHANDLE h)
{
    LONG rv;

    (void)h;
    if (!card.connected || card.in_transaction)
        abort();
    rv = next_event();
    card.in_transaction = rv == SCARD_S_SUCCESS;
    return rv;
}

LONG SCardEndTransaction(SCARDHANDLE h, DWORD disposition)
{
    (void)h;
    (void)disposition;
    card.in_transaction = 0;
    return SCARD_S_SUCCESS;
}

/* A command APDU's length agrees with its Lc and Le fields (ISO/IEC 7816-3 cases 1-4). */
static int well_formed(const uint8_t *a, size_t n)
{
    size_t lc;

    if (n <= 5)
        return n >= 4;
    if (a[4] != 0)
        return n == 5 + a[4] || n == 6 + a[4];
    if (n == 7)
        return 1; /* extended case 2 */
    lc = ((size_t)a[5] << 8) | a[6];
    return lc > 0 && (n == 7 + lc || n == 9 + lc);
}

LONG SCardTransmit(SCARDHANDLE h, const SCARD_IO_REQUEST *send_pci, LPCBYTE apdu, DWORD n,
                   SCARD_IO_REQUEST *recv_pci, LPBYTE out, LPDWORD out_len)
{
    uint8_t hi, lo;
    size_t len;
    LONG rv;

    (void)h;
    (void)send_pci;
    (void)recv_pci;
    if (!card.connected || !card.in_transaction || !well_formed(apdu, n))
        abort();
    if (card.select_expected && !card.reset_pending) {
        if (apdu[1] != 0xA4)
            abort(); /* after a reconnect, anything but SELECT first is a protocol that forgot */
        card.select_expected = 0;
    }
    if ((rv = next_event()) != SCARD_S_SUCCESS)
        return rv;
    if (!take(&hi) || !take(&lo))
        return SCARD_W_REMOVED_CARD;
    len = ((size_t)hi << 8) | lo;
    if (len > card.n)
        len = card.n;
    if (len > *out_len)
        len = *out_len;
    memcpy(out, card.p, len);
    card.p += len;
    card.n -= len;
    *out_len = (DWORD)len;
    return SCARD_S_SUCCESS;
}

LONG SCardControl(SCARDHANDLE h, DWORD code, LPCVOID in, DWORD in_len, LPVOID out, DWORD out_len, LPDWORD got)
{
    uint8_t *o = out;

    (void)h;
    (void)in;
    (void)in_len;
    if (!card.short_reader || out_len < 6)
        return SCARD_E_UNSUPPORTED_FEATURE;
    if (code == CM_IOCTL_GET_FEATURE_REQUEST) {
        o[0] = FEATURE_GET_TLV_PROPERTIES;
        o[1] = 4;
        o[2] = 0x42;
        o[3] = 0;
        o[4] = 0;
        o[5] = 0x12;
    } else {
        o[0] = PCSCv2_PART10_PROPERTY_dwMaxAPDUDataSize;
        o[1] = 4;
        memset(o + 2, 0, 4); /* 0: short APDUs only */
    }
    *got = 6;
    return SCARD_S_SUCCESS;
}

const char *pcsc_stringify_error(const LONG rv)
{
    (void)rv;
    return "fuzzed";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const pcsc_app *const apps[] = { &pcsc_app_sks, &pcsc_app_schsm };
    static uint8_t big[700];
    static const uint8_t small[] = { 0x01 };
    /* enumerateKeys after handle 0: the SmartCard-HSM driver answers getDeviceInfo from its
     * SELECT and refuses the long request before sending anything, so without this request
     * none of its APDUs (key list, descriptions, certificates) went over the link */
    static const uint8_t enumerate[] = { 70, 0, 0, 0, 0 };
    char err[1024];
    sks_buf reply;
    pcsc_link *l;
    int i;

    if (size < 1)
        return 0;
    memset(&card, 0, sizeof(card));
    card.short_reader = data[0] & 1;
    card.p = data + 1;
    card.n = size - 1;
    memset(big, 0x5A, sizeof(big)); /* over 255 bytes: chained in short APDUs */
    big[0] = 0x64;
    if ((l = pcsc_link_open("", apps, 2, err, sizeof(err))) == NULL)
        return 0;
    sks_buf_init(&reply);
    for (i = 0; i < 4 && card.n > 0; i++) {
        int ok = i % 2 == 0 ? pcsc_link_call(l, small, sizeof(small), &reply, err, sizeof(err))
                 : data[0] & 2 ? pcsc_link_call(l, enumerate, sizeof(enumerate), &reply, err, sizeof(err))
                               : pcsc_link_call(l, big, sizeof(big), &reply, err, sizeof(err));
        if (ok && reply.len > 16u * 1024 * 1024)
            abort();
    }
    sks_buf_free(&reply);
    pcsc_link_close(l);
    return 0;
}
