/*
 * The PrKD rewriter of sks hsm restore (schsm/mgmt_dkek.c): a key description from a wrap file
 * (outside input) given a new key reference and label. Byte 0 picks the key reference and
 * whether a label is set; a rewritten description must read back with that label.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../schsm/mgmt_dkek.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t LABEL[] = "renamed";
    const uint8_t *label;
    size_t n;
    sks_buf out;
    int rename;

    if (size < 1)
        return 0;
    rename = data[0] & 1;
    sks_buf_init(&out);
    (void)schsm_prkd_label(data + 1, size - 1, &label, &n);
    if (schsm_prkd_rewrite(data + 1, size - 1, data[0], rename ? LABEL : NULL, rename ? 7 : 0, &out) && rename) {
        if (!schsm_prkd_label(out.data, out.len, &label, &n) || n != 7 || memcmp(label, LABEL, 7) != 0)
            abort();
    }
    sks_buf_free(&out);
    return 0;
}
