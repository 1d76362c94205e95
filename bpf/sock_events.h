/* Dry run of the connect hooks: decide as usual, change nothing, and tell
 * ktproxy what each connect would have become.
 *
 * Map ktp_switches: see struct ktp_switches (ktproxy_shared.h). Read on
 * every connect, so that `ktproxy ctl dry-run on|off` and SIGHUP take effect
 * at the next connect, without restarting anything.
 *
 * Map ktp_events: ring buffer of struct ktp_dry_event. Owner: the ktproxy
 * process that loaded the hooks (never pinned); written by connect4/6 in dry
 * run, read and logged by ktproxy's main thread. Deleting event: ktproxy
 * consuming a record. A full buffer drops the event and counts it
 * (KTP_CTR_DRY_EVENTS_LOST): the hook never waits.
 *
 * Needs sock_maps.h, sock_route.h and sock_deadcache.h. */
#ifndef KTPROXY_SOCK_EVENTS_H
#define KTPROXY_SOCK_EVENTS_H

#include "ktproxy_shared.h"
#include "sock_logic.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ktp_switches);
} ktp_switches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);  /* about 4000 events between two reads */
} ktp_events SEC(".maps");

static __always_inline int ktp_dry_run_on(void)
{
	__u32 key = KTP_SWITCHES_KEY;
	struct ktp_switches *sw = bpf_map_lookup_elem(&ktp_switches, &key);

	return sw && sw->dry_run;
}

/* Is dst:port in the dead cache? Like ktp_dead_dst_refuse, without setting
 * the connect's return value. */
static __always_inline int ktp_dead_dst_known(const __u32 dst[4], __u32 port_net, __u64 netns)
{
	return ktp_dead_dst_live(dst, port_net, netns) != 0;
}

/* The dry run of one connect (past the skips that apply in any mode: the
 * proxy's mark, another netns, a local destination): decides as the normal
 * path would, counts and reports it, and lets the connect go out untouched.
 * can_redirect: 0 when the normal path could not redirect this family (no
 * IPv6 listener). dst: the destination, v4-mapped. Returns the hook's
 * verdict (1). */
static __always_inline int ktp_dry_run(struct bpf_sock_addr *ctx, struct bpf_sock *sk, const __u32 dst[4],
				       int can_redirect)
{
	struct ktp_dry_event *ev;
	__u32 action, would, dev, port_net;
	__u64 id;
	__u16 rule;

	/* One load each (see KTP_LOAD): the verifier refuses ctx + offset. */
	port_net = ctx->user_port;
	asm volatile("" : "+r"(port_net) :: "memory");

	action = ktp_route_action(dst, port_net, &rule);
	if (action == KTP_ACT_DIRECT) {
		would = KTP_WOULD_PASS;
	} else if (action == KTP_ACT_BLOCK) {
		would = KTP_WOULD_BLOCK;
	} else if (!can_redirect) {
		would = KTP_WOULD_PASS;
	} else if (ktp_dead_dst_known(dst, port_net, bpf_get_netns_cookie(ctx))) {
		would = KTP_WOULD_REFUSE;
	} else {
		dev = sk->bound_dev_if;
		asm volatile("" : "+r"(dev) :: "memory");  /* one load: see KTP_LOAD */
		would = dev ? KTP_WOULD_PASS : KTP_WOULD_REDIRECT;
	}
	switch (would) {
	case KTP_WOULD_BLOCK: ktp_count(KTP_CTR_DRY_BLOCK); break;
	case KTP_WOULD_REDIRECT: ktp_count(KTP_CTR_DRY_REDIRECT); break;
	case KTP_WOULD_REFUSE: ktp_count(KTP_CTR_DRY_REFUSE); break;
	default: ktp_count(KTP_CTR_DRY_PASS); break;
	}

	ev = bpf_ringbuf_reserve(&ktp_events, sizeof(*ev), 0);
	if (!ev) {
		ktp_count(KTP_CTR_DRY_EVENTS_LOST);
		return 1;
	}
	ev->cgroup_id = bpf_get_current_cgroup_id();
	id = bpf_get_current_pid_tgid();
	ev->pid = (__u32)(id >> 32);
	ev->tid = (__u32)id;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->addr[0] = dst[0];
	ev->addr[1] = dst[1];
	ev->addr[2] = dst[2];
	ev->addr[3] = dst[3];
	ev->port = (__u16)port_net;
	ev->family = ktp_wire_family(dst);
	ev->rule = rule;
	ev->action = (__u8)action;
	ev->would = (__u8)would;
	if (bpf_get_current_comm(ev->comm, sizeof(ev->comm)))
		__builtin_memset(ev->comm, 0, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
	return 1;
}

#endif
