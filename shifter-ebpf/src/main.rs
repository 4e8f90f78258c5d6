//! shifter's kernel programs.
//!
//! - `shifter_tc_ingress` / `shifter_xdp_ingress`: steer each new connection for a service
//!   port to the blue or green backend port, and keep established ones where they are.
//! - `shifter_tc_egress`: rewrite replies of shifted connections back to the service port.
//!
//! Every error path passes the packet unchanged: the safe default for a traffic shifter.
//! Each one gives a `Skip` reason, counted per CPU in `SHIFTER_SKIP`.
#![no_std]
#![no_main]

/// Reads a context field with one load at a constant offset: the verifier rejects loads
/// through a context pointer that was moved, and LLVM merges branchy reads into one.
macro_rules! field {
    ($ctx:expr, $($f:tt)+) => {
        // SAFETY: `ctx` is the program's context pointer.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$ctx).$($f)+)) }
    };
}

mod csum;
mod ctx;
mod dispatch;
mod egress;
mod ingress;
mod maps;
mod parse;
mod sk;
mod sockops;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, sk_lookup, sock_ops, xdp},
    programs::{SkLookupContext, SockOpsContext, TcContext, XdpContext},
};

/// "Continue": lets any program after ours run (TCX_NEXT / TC_ACT_UNSPEC) and otherwise passes.
const TC_CONTINUE: i32 = TC_ACT_UNSPEC;

// The `build-variant` feature (upgrade tests only) makes a second build whose instructions
// differ in a path nothing takes (an skb or XDP frame is never empty, no sock_ops op is
// u32::MAX), so its program tags differ from the normal build's.

#[classifier]
pub fn shifter_tc_ingress(ctx: TcContext) -> i32 {
    #[cfg(feature = "build-variant")]
    if ctx.len() == 0 {
        return aya_ebpf::bindings::TC_ACT_OK;
    }
    if let Err(reason) = ingress::run(&ingress::Tc(&ctx)) {
        maps::count_skip(reason);
    }
    TC_CONTINUE
}

#[classifier]
pub fn shifter_tc_egress(ctx: TcContext) -> i32 {
    #[cfg(feature = "build-variant")]
    if ctx.len() == 0 {
        return aya_ebpf::bindings::TC_ACT_OK;
    }
    if let Err(reason) = egress::run(&ctx) {
        maps::count_skip(reason);
    }
    TC_CONTINUE
}

#[xdp]
pub fn shifter_xdp_ingress(ctx: XdpContext) -> u32 {
    #[cfg(feature = "build-variant")]
    if ctx.data_end() <= ctx.data() {
        return xdp_action::XDP_ABORTED;
    }
    if let Err(reason) = ingress::run(&ingress::Xdp(&ctx)) {
        maps::count_skip(reason);
    }
    xdp_action::XDP_PASS
}

#[sock_ops]
pub fn shifter_sock_ops(ctx: SockOpsContext) -> u32 {
    #[cfg(feature = "build-variant")]
    if ctx.op() == u32::MAX {
        return 0;
    }
    if let Err(reason) = sockops::run(&ctx) {
        maps::count_skip(reason);
    }
    1
}

/// Socket dispatch: runs once per new connection (listener lookup) in the namespace.
#[sk_lookup]
pub fn shifter_sk_lookup(ctx: SkLookupContext) -> u32 {
    #[cfg(feature = "build-variant")]
    if ctx.lookup.is_null() {
        return aya_ebpf::bindings::sk_action::SK_PASS;
    }
    if let Err(reason) = dispatch::lookup(&ctx) {
        maps::count_skip(reason);
    }
    aya_ebpf::bindings::sk_action::SK_PASS
}

/// Socket dispatch: remembers backend listeners at `listen()`. A program of its own (not a
/// case of `shifter_sock_ops`): it needs helpers older kernels lack, and rewrite dispatch
/// must keep working there.
#[sock_ops]
pub fn shifter_sock_listen(ctx: SockOpsContext) -> u32 {
    #[cfg(feature = "build-variant")]
    if ctx.op() == u32::MAX {
        return 0;
    }
    if let Err(reason) = dispatch::on_listen(&ctx) {
        maps::count_skip(reason);
    }
    1
}

/// Socket dispatch: remembers a listener that predates the programs (see
/// `dispatch::register`); only ever run by `BPF_PROG_TEST_RUN`, never attached.
#[classifier]
pub fn shifter_register_listener(ctx: TcContext) -> i32 {
    let result = dispatch::register(ctx.as_ptr(), ctx.data(), ctx.data_end());
    if result == 2 {
        maps::count_skip(shifter_common::Skip::ListenerRecordFailed);
    }
    result as i32
}

/// Socket dispatch: tags a listener registered from userspace (see `dispatch::tag`); only
/// ever run by `BPF_PROG_TEST_RUN`, never attached.
#[classifier]
pub fn shifter_tag_listener(ctx: TcContext) -> i32 {
    dispatch::tag(ctx.as_ptr(), ctx.data(), ctx.data_end()) as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
