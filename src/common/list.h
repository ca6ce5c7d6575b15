/* SPDX-License-Identifier: MIT */
/*
 * list.h - intrusive circular doubly linked list (the kernel's list_head).
 * Embed a struct list_node in the element; the list never allocates.
 */
#ifndef PLANE_LIST_H
#define PLANE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "xalloc.h"

struct list_node {
    struct list_node *prev, *next;
};

static inline void list_init(struct list_node *head)
{
    head->prev = head->next = head;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

static inline void list_insert_tail(struct list_node *head, struct list_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Unlinks n and points it at itself, so a second remove is harmless. */
static inline void list_remove(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define list_entry(ptr, type, member) container_of(ptr, type, member)

/* Safe against removal of the current element. */
#define list_for_each_safe(pos, tmp, head)                                                         \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
