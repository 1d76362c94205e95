// SPDX-License-Identifier: GPL-2.0
/* Runs the connect hooks' routing step (bpf/sock_route.h: LPM lookup +
 * first match) on destinations filled in by user space, against a ktp_routes
 * map filled by the real rule compiler. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock_maps.h"
#include "sock_route.h"
#include "route_case.h"

struct ktp_route_case ktp_route_cases[KTP_MAX_ROUTE_CASES] = {};
__u32 ktp_route_ncases = 0;

SEC("tc")
int ktp_test_route(struct __sk_buff *skb)
{
	for (__u32 i = 0; i < KTP_MAX_ROUTE_CASES; i++) {
		struct ktp_route_case *c = &ktp_route_cases[i];

		if (i >= ktp_route_ncases)
			break;
		c->verdict = ktp_route(c->addr, c->port_net);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
