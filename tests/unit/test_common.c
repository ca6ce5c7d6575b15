/* SPDX-License-Identifier: MIT */
/*
 * test_common.c - unit tests of src/common: buf, line_reader, names and
 * tokens, net addresses, json helpers.
 */
#include <errno.h>

#include "../../src/common/buf.h"
#include "../../src/common/json_util.h"
#include "../../src/common/line_reader.h"
#include "../../src/common/names.h"
#include "../../src/common/net.h"
#include "test.h"

TEST(buf_append_and_cap)
{
    struct buf b;

    buf_init(&b, 8);
    ASSERT_STR_EQ(buf_cstr(&b), "");
    ASSERT_OK(buf_append_str(&b, "hello"));
    ASSERT_EQ(buf_append_str(&b, "world"), -ENOBUFS);
    ASSERT_STR_EQ(buf_cstr(&b), "hello"); /* unchanged by the failed append */
    ASSERT_OK(buf_printf(&b, "%d", 123));
    ASSERT_STR_EQ(buf_cstr(&b), "hello123");
    ASSERT_EQ(buf_printf(&b, "x"), -ENOBUFS);
    buf_consume(&b, 5);
    ASSERT_STR_EQ(buf_cstr(&b), "123");
    char *d = buf_detach(&b);
    ASSERT_STR_EQ(d, "123");
    free(d);
    ASSERT_EQ(b.len, 0);
    ASSERT_OK(buf_append_str(&b, "again")); /* reusable */
    buf_release(&b);
    ASSERT_NULL(b.data);
}

struct lines {
    char got[16][64];
    size_t lens[16];
    int n;
    int stop_after;
};

static int collect(void *arg, const char *line, size_t len)
{
    struct lines *l = arg;

    snprintf(l->got[l->n], sizeof(l->got[0]), "%s", line ? line : "<dropped>");
    l->lens[l->n] = len;
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

TEST(line_reader_splits_across_chunks)
{
    struct line_reader r;
    struct lines l = {0};

    line_reader_init(&r, 32);
    ASSERT_OK(line_reader_feed(&r, "ab", 2, collect, &l));
    ASSERT_EQ(l.n, 0);
    ASSERT_OK(line_reader_feed(&r, "c\nde\r\n\nf", 8, collect, &l));
    ASSERT_EQ(l.n, 3);
    ASSERT_STR_EQ(l.got[0], "abc");
    ASSERT_STR_EQ(l.got[1], "de"); /* CR before LF is not part of the line */
    ASSERT_EQ(l.lens[1], 2);
    ASSERT_STR_EQ(l.got[2], "");
    ASSERT_OK(line_reader_feed(&r, "g\n", 2, collect, &l));
    ASSERT_STR_EQ(l.got[3], "fg");
    line_reader_release(&r);
}

TEST(line_reader_drops_overlong_lines)
{
    struct line_reader r;
    struct lines l = {0};
    char big[100];

    memset(big, 'x', sizeof(big));
    line_reader_init(&r, 10);
    ASSERT_OK(line_reader_feed(&r, "short\n", 6, collect, &l));
    ASSERT_OK(line_reader_feed(&r, big, 8, collect, &l));
    ASSERT_OK(line_reader_feed(&r, big, sizeof(big), collect, &l)); /* now too long */
    ASSERT_OK(line_reader_feed(&r, "xx\nok\n", 6, collect, &l));
    ASSERT_EQ(l.n, 3);
    ASSERT_STR_EQ(l.got[0], "short");
    ASSERT_STR_EQ(l.got[1], "<dropped>");
    ASSERT_EQ(l.lens[1], 110);
    ASSERT_STR_EQ(l.got[2], "ok");
    ASSERT_TRUE(r.pending.alloc <= 64); /* never buffered the long line */
    line_reader_release(&r);
}

TEST(line_reader_stops_when_asked)
{
    struct line_reader r;
    struct lines l = {.stop_after = 1};

    line_reader_init(&r, 100);
    ASSERT_EQ(line_reader_feed(&r, "a\nb\nc\n", 6, collect, &l), 1);
    ASSERT_EQ(l.n, 1);
    line_reader_release(&r);
}

TEST(names_random_and_valid)
{
    char *a = name_random("dr");
    char *b = name_random("dr");
    char *c = name_random(NULL);

    ASSERT_EQ(strlen(a), 17);
    ASSERT_TRUE(strncmp(a, "dr-", 3) == 0);
    ASSERT_TRUE(strcmp(a, b) != 0);
    ASSERT_EQ(strlen(c), NAME_RANDOM_LEN);
    ASSERT_TRUE(name_is_valid(a, "dr"));
    ASSERT_TRUE(name_is_valid(c, NULL));
    ASSERT_FALSE(name_is_valid(a, "px"));
    ASSERT_FALSE(name_is_valid("dr-UPPER", "dr"));
    ASSERT_FALSE(name_is_valid("dr-under_score", "dr"));
    ASSERT_FALSE(name_is_valid("", NULL));
    ASSERT_TRUE(name_is_valid("dr-123456789012345678901234567890123456789012", "dr")); /* 45 */
    ASSERT_FALSE(name_is_valid("dr-1234567890123456789012345678901234567890123", "dr")); /* 46 */
    free(a);
    free(b);
    free(c);
}

TEST(names_alphabet_is_uniform_enough)
{
    int counts[36] = {0};
    char s[36001];

    random_alnum(s, sizeof(s) - 1);
    for (size_t i = 0; i < sizeof(s) - 1; i++) {
        char ch = s[i];
        ASSERT_TRUE((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'));
        counts[ch >= 'a' ? ch - 'a' : 26 + ch - '0']++;
    }
    for (int i = 0; i < 36; i++) /* expected 1000 each; 6 sigma is about 190 */
        ASSERT_TRUE(counts[i] > 800 && counts[i] < 1200);
}

TEST(tokens_base64url)
{
    char out[16];
    char *t = token_random();
    char *s = token_static_random();

    ASSERT_EQ(strlen(t), TOKEN_LEN);
    ASSERT_EQ(strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), TOKEN_LEN);
    ASSERT_EQ(strlen(s), TOKEN_LEN + 2);
    ASSERT_TRUE(token_is_static(s));
    ASSERT_FALSE(token_is_static(t));
    /* RFC 4648 test vectors, without padding. */
    ASSERT_EQ(base64url_encode((const unsigned char *)"foobar", 6, out), 8);
    ASSERT_STR_EQ(out, "Zm9vYmFy");
    base64url_encode((const unsigned char *)"fo", 2, out);
    ASSERT_STR_EQ(out, "Zm8");
    base64url_encode((const unsigned char *)"f", 1, out);
    ASSERT_STR_EQ(out, "Zg");
    base64url_encode((const unsigned char *)"\xfb\xff", 2, out);
    ASSERT_STR_EQ(out, "-_8");
    free(t);
    free(s);
}

TEST(net_addresses)
{
    struct sockaddr_storage ss;
    char out[NET_ADDR_LEN];

    ASSERT_OK(net_addr_parse("127.0.0.1:8080", &ss));
    ASSERT_EQ(ss.ss_family, AF_INET);
    ASSERT_OK(net_addr_parse("[::1]:9", &ss));
    ASSERT_EQ(ss.ss_family, AF_INET6);
    ASSERT_EQ(net_addr_parse("127.0.0.1", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse("127.0.0.1:0", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse("127.0.0.1:65536", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse("127.0.0.1:80x", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse("localhost:80", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse("[::1:80", &ss), -EINVAL);
    ASSERT_EQ(net_addr_parse(":80", &ss), -EINVAL);
    net_addr_format(out, "10.0.0.1", 80);
    ASSERT_STR_EQ(out, "10.0.0.1:80");
    net_addr_format(out, "::1", 80);
    ASSERT_STR_EQ(out, "[::1]:80");
    int port = net_pick_free_port("127.0.0.1", 0);
    ASSERT_TRUE(port > 0);
}

TEST(json_sorted_copy_sorts_nested_keys)
{
    json_t *v = json_loads("{\"b\":1,\"a\":{\"z\":[{\"y\":1,\"x\":2}],\"c\":null}}", 0, NULL);
    json_t *s = json_sorted_copy(v);
    char *line = json_dump_line(s);

    ASSERT_STR_EQ(line, "{\"a\":{\"c\":null,\"z\":[{\"x\":2,\"y\":1}]},\"b\":1}\n");
    free(line);
    json_decref(v);
    json_decref(s);
    json_t *bad = json_string_safe("caf\xe9");
    ASSERT_STR_EQ(json_string_value(bad), "caf?");
    json_decref(bad);
}
