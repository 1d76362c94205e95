// SPDX-License-Identifier: GPL-2.0
/* Runs the gateway's parse + classify (bpf/gw_parse.h) on the packet given
 * to BPF_PROG_RUN and leaves the verdict in a global for the test to read. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock_maps.h"
#include "gw_parse.h"

__u32 ktp_gw_test_verdict = 0xffffffff;
__u32 ktp_gw_test_syn = 0xffffffff;

SEC("tc")
int ktp_test_gw(struct __sk_buff *skb)
{
	struct ktp_gw_pkt p = {};

	if (ktp_gw_parse(skb, &p)) {
		ktp_gw_test_verdict = KTP_GW_PASS;
		return 0;
	}
	ktp_gw_test_syn = p.syn;
	ktp_gw_test_verdict = ktp_gw_classify(&p);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
