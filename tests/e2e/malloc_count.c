// LD_PRELOAD shim for reliability.sh: counts malloc/calloc/realloc calls
// (operator new included: it calls malloc) and writes the total to
// $MALLOC_COUNT_FILE when the process exits.
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);

static atomic_ulong calls;

void* malloc(size_t n)
{
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

void* calloc(size_t a, size_t b)
{
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return __libc_calloc(a, b);
}

void* realloc(void* p, size_t n)
{
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

__attribute__((destructor)) static void report(void)
{
    const char* path = getenv("MALLOC_COUNT_FILE");
    FILE* f = path ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "%lu\n", (unsigned long)atomic_load(&calls));
        fclose(f);
    }
}
