/* One row of the sock_logic BPF test table, shared by the test program and
 * the C++ test that fills it (skeleton globals need the type on both sides). */
#ifndef KTPROXY_SOCK_LOGIC_CASE_H
#define KTPROXY_SOCK_LOGIC_CASE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define KTP_MAX_CASES 32

struct ktp_logic_case {
	__u32 addr[4];     /* input: v4-mapped or IPv6, network order */
	__u32 is_local4;   /* outputs */
	__u32 is_local6;
	__u32 is_mapped;
	__u32 wire_family;
	__u32 remapped[4]; /* ktp_map_v4(addr[3]) */
	__u32 is_linklocal6;
	__u32 skip_dst6;   /* connect6 leaves it alone before any rule */
};

#endif
