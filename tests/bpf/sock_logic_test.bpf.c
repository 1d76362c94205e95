// SPDX-License-Identifier: GPL-2.0
/* Runs the socket hooks' pure decisions (bpf/sock_logic.h) on a table of
 * addresses filled in by user space, so that BPF_PROG_RUN can check them:
 * the cgroup hooks themselves cannot be run by BPF_PROG_RUN. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock_logic.h"

#include "sock_logic_case.h"

struct ktp_logic_case ktp_cases[KTP_MAX_CASES] = {};
__u32 ktp_ncases = 0;

SEC("tc")
int ktp_test_sock_logic(struct __sk_buff *skb)
{
	for (__u32 i = 0; i < KTP_MAX_CASES; i++) {
		struct ktp_logic_case *c = &ktp_cases[i];

		if (i >= ktp_ncases)
			break;
		c->is_local4 = ktp_is_local4(c->addr[3]);
		c->is_local6 = ktp_is_local6(c->addr);
		c->is_mapped = ktp_is_v4mapped(c->addr);
		c->wire_family = ktp_wire_family(c->addr);
		ktp_map_v4(c->remapped, c->addr[3]);
		c->is_linklocal6 = ktp_is_linklocal6(c->addr);
		c->skip_dst6 = ktp_skip_dst6(c->addr);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
