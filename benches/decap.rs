//! Decapsulation cost per packet, for each encapsulation and inner size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::wire::GeneveOption;
use zeek_udp_source::{Encap, LinkType};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decap");
    group.throughput(Throughput::Elements(1));
    let mut options = Vec::new();
    GeneveOption::emit(0x0103, 1, &[0; 8], &mut options);
    for size in [64usize, 512, 1500] {
        let frame = vec![0x45u8; size];
        for encap in [
            Encap::Vxlan,
            Encap::Geneve,
            Encap::GeneveVxlan,
            Encap::Raw,
            Encap::Skip(8),
        ] {
            let mut enc = Encoder::new(encap);
            enc.geneve_options = options.clone();
            let mut datagram = Vec::new();
            enc.encode(&frame, LinkType::En10Mb, &mut datagram);
            let decap = Decapsulator::new(encap, LinkType::En10Mb);
            group.bench_with_input(BenchmarkId::new(encap.token(), size), &datagram, |b, d| {
                b.iter(|| black_box(decap.decap(black_box(d))).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
