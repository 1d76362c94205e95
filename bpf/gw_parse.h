/* Gateway packet parsing and classification: pure functions of the packet
 * and the routing rules, so that BPF_PROG_RUN tests drive them with crafted
 * packets. Socket lookups and assignment stay in tc_gateway.bpf.c. */
#ifndef KTPROXY_GW_PARSE_H
#define KTPROXY_GW_PARSE_H

#include "ktproxy_shared.h"
#include "sock_logic.h"
#include "sock_route.h"

#define KTP_ETH_P_IP 0x0800
#define KTP_ETH_P_IPV6 0x86DD
#define KTP_IPPROTO_TCP 6
#define KTP_IP_MF 0x2000
#define KTP_IP_OFFSET 0x1FFF

struct ktp_gw_pkt {
	struct bpf_sock_tuple tuple;  /* as in the packet: src = client, dst = original destination */
	__u32 tuple_len;
	__u32 dst[4];                 /* v4-mapped for IPv4 */
	__u16 family;
	__u8 syn;                     /* SYN without ACK: a new connection */
	__u8 _pad;
};

/* 0: a TCP segment we can read; -1: anything else (passed untouched). */
static __always_inline int ktp_gw_parse(struct __sk_buff *skb, struct ktp_gw_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *tcp;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(KTP_ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
			return -1;
		if (ip->protocol != KTP_IPPROTO_TCP)
			return -1;
		/* Fragments carry no (or a partial) TCP header: not ours to judge. */
		if (ip->frag_off & bpf_htons(KTP_IP_MF | KTP_IP_OFFSET))
			return -1;
		tcp = (void *)ip + ip->ihl * 4;
		if ((void *)(tcp + 1) > end)
			return -1;
		p->family = KTP_AF_INET;
		p->tuple.ipv4.saddr = ip->saddr;
		p->tuple.ipv4.daddr = ip->daddr;
		p->tuple.ipv4.sport = tcp->source;
		p->tuple.ipv4.dport = tcp->dest;
		p->tuple_len = sizeof(p->tuple.ipv4);
		ktp_map_v4(p->dst, ip->daddr);
	} else if (eth->h_proto == bpf_htons(KTP_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->version != 6)
			return -1;
		/* Extension headers are not walked: such packets pass untouched. */
		if (ip6->nexthdr != KTP_IPPROTO_TCP)
			return -1;
		tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > end)
			return -1;
		p->family = KTP_AF_INET6;
		__builtin_memcpy(p->tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->tuple.ipv6.daddr, &ip6->daddr, 16);
		p->tuple.ipv6.sport = tcp->source;
		p->tuple.ipv6.dport = tcp->dest;
		p->tuple_len = sizeof(p->tuple.ipv6);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
	} else {
		return -1;
	}
	if (tcp->doff < 5)
		return -1;
	p->syn = tcp->syn && !tcp->ack;
	return 0;
}

/* The rules' word on a parsed packet (enum ktp_gw_verdict). */
static __always_inline __u32 ktp_gw_classify(const struct ktp_gw_pkt *p)
{
	__u16 dport = p->family == KTP_AF_INET ? p->tuple.ipv4.dport : p->tuple.ipv6.dport;
	int r = ktp_route(p->dst, dport);

	if (r > 0)
		return KTP_GW_DIRECT;
	if (r == 0)
		return KTP_GW_BLOCK;
	return KTP_GW_PROXY;
}

#endif
