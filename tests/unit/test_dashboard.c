/* SPDX-License-Identifier: MIT */
/* test_dashboard.c - what the dashboard asks forward auth about. */
#include <stdlib.h>

#include "../../src/controller/dashboard.h"
#include "test.h"

TEST(dashboard_auth_path_encodes_what_a_header_cannot_carry)
{
    char a[] = "dashboard", b[] = "events", evil[] = "\r\nx-evil: 1", odd[] = "a b%/?#\xff~:@";
    char *page[] = {a}, *events[] = {a, b}, *hostile[] = {a, evil}, *other[] = {a, odd};
    char *s;

    ASSERT_STR_EQ(s = dashboard_auth_path(page, 1), "/dashboard");
    free(s);
    ASSERT_STR_EQ(s = dashboard_auth_path(events, 2), "/dashboard/events");
    free(s);
    ASSERT_STR_EQ(s = dashboard_auth_path(hostile, 2), "/dashboard/%0D%0Ax-evil:%201");
    free(s);
    ASSERT_STR_EQ(s = dashboard_auth_path(other, 2), "/dashboard/a%20b%25%2F%3F%23%FF~:@");
    free(s);
}
