/* One row of the routing BPF test: destination in, verdict out. */
#ifndef KTPROXY_ROUTE_CASE_H
#define KTPROXY_ROUTE_CASE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define KTP_MAX_ROUTE_CASES 32

struct ktp_route_case {
	__u32 addr[4];   /* v4-mapped or IPv6, network order */
	__u32 port_net;  /* network order in the low 16 bits, as ctx->user_port */
	__s32 verdict;   /* 1 = untouched (direct), 0 = EPERM (block), -1 = to the proxy */
};

#endif
