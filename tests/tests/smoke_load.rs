//! Smallest end-to-end check: the programs load, and one SYN is steered.
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use shifter::Service;
use shifter_tests::testrun::TestDataPlane;

fn syn_v4(dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20 + 20];
    p[12] = 0x08;
    p[14] = 0x45;
    p[16..18].copy_from_slice(&40u16.to_be_bytes());
    p[22] = 64;
    p[23] = 6;
    p[26..30].copy_from_slice(&[198, 18, 0, 1]);
    p[30..34].copy_from_slice(&[198, 18, 0, 2]);
    p[34..36].copy_from_slice(&40000u16.to_be_bytes());
    p[36..38].copy_from_slice(&dport.to_be_bytes());
    p[38..42].copy_from_slice(&1234u32.to_be_bytes());
    p[46] = 0x50;
    p[47] = 0x02;
    p
}

#[test]
fn programs_load_and_steer_a_syn() {
    let mut dp = TestDataPlane::load("smoke");
    dp.set_service(&Service::tcp(80, 8081, 8082, 0))
        .expect("set service");
    let prog: &mut SchedClassifier = dp
        .program_mut(shifter_common::PROG_TC_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    let input = syn_v4(80);
    let mut out = vec![0u8; input.len()];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .expect("test run");
    assert_eq!(r.return_value, shifter_tests::testrun::TC_ACT_UNSPEC);
    let port = u16::from_be_bytes([out[36], out[37]]);
    assert_eq!(port, 8081);
}
