//! SPICE, QXL, USB redirection, sound and audio as virt-install / virt-manager write them:
//! what is accepted round-trips and reaches the argv; what is not is refused by name.

use novacron_domain::model::*;
use novacron_domain::{
    build_argv, Accel, ArgvError, CpuChoice, DomainConfig, LaunchContext, MonitorSocket, XmlError,
};

fn ctx() -> LaunchContext {
    LaunchContext {
        emulator: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Kvm,
        cpu: CpuChoice::AsConfigured,
        monitor: MonitorSocket::Fd(3),
        fd_sets: Vec::new(),
        runtime_dir: "/run/novacron/domains/t".into(),
        memory_dir: None,
        serial_log: None,
        net_fds: Default::default(),
        vnc_display: Some(1),
        spice_port: Some(5930),
        swtpm_socket: None,
        sandbox: false,
        host_paths: Default::default(),
        backing_chains: Default::default(),
    }
}

const BASE: &str = "<domain type='kvm'>
  <name>t</name>
  <uuid>7c1f2e3d-4a5b-4c6d-8e9f-0a1b2c3d4e60</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <controller type='usb' index='0' model='qemu-xhci'/>
    @DEV@
  </devices>
</domain>
";

fn doc(dev: &str) -> String {
    BASE.replace("@DEV@", dev)
}

fn argv_of(xml: &str) -> Vec<String> {
    let cfg = DomainConfig::from_xml(xml).expect("parse");
    let again = DomainConfig::from_xml(&cfg.to_xml()).expect("re-parse");
    assert_eq!(cfg, again, "parse(write(x)) != x\n{}", cfg.to_xml());
    assert_eq!(
        DomainConfig::from_json(&cfg.to_json()).expect("json"),
        cfg,
        "JSON round trip"
    );
    build_argv(&cfg.validate().expect("valid"), &ctx()).expect("argv")
}

/// The value following `opt` each time it occurs.
fn values<'a>(argv: &'a [String], opt: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == opt)
        .map(|w| w[1].as_str())
        .collect()
}

#[track_caller]
fn refused(xml: &str, needle: &str) {
    match DomainConfig::from_xml(xml) {
        Err(e) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
        Ok(cfg) => {
            let e = cfg.validate().expect_err("must be refused");
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        }
    }
}

#[test]
fn audio_none_is_kept_and_given_to_qemu() {
    let xml = doc("<graphics type='vnc' port='5901'/><audio id='1' type='none'/>");
    let cfg = DomainConfig::from_xml(&xml).expect("parse");
    assert_eq!(
        cfg.devices.audios,
        vec![Audio {
            id: 1,
            backend: AudioBackend::None
        }]
    );
    assert!(cfg.to_xml().contains("<audio id='1' type='none'/>"));
    assert_eq!(values(&argv_of(&xml), "-audiodev"), ["none,id=audio1"]);
}

#[test]
fn spice_listen_variants() {
    let a = argv_of(&doc(
        "<graphics type='spice' port='5905' autoport='no' listen='::1'>\
           <listen type='address' address='::1'/><image compression='auto_glz'/></graphics>",
    ));
    assert_eq!(
        values(&a, "-spice"),
        ["port=5905,addr=::1,disable-ticketing=on,image-compression=auto_glz,seamless-migration=on"]
    );
    // listen type none: no TCP listener at all.
    let a = argv_of(&doc(
        "<graphics type='spice'><listen type='none'/></graphics>",
    ));
    assert_eq!(
        values(&a, "-spice"),
        ["disable-ticketing=on,seamless-migration=on"]
    );
    // autoport: the host layer's port, on localhost by default.
    let a = argv_of(&doc("<graphics type='spice' autoport='yes'/>"));
    assert_eq!(
        values(&a, "-spice"),
        ["port=5930,addr=127.0.0.1,disable-ticketing=on,seamless-migration=on"]
    );
    let cfg = DomainConfig::from_xml(&doc("<graphics type='spice' autoport='yes'/>")).unwrap();
    let mut ctx = ctx();
    ctx.spice_port = None;
    assert_eq!(
        build_argv(&cfg.validate().unwrap(), &ctx),
        Err(ArgvError::MissingSpicePort)
    );
}

#[test]
fn spice_session_options_reach_qemu() {
    let a = argv_of(&doc(
        "<graphics type='spice' autoport='yes'>\
           <image compression='auto_glz'/><jpeg compression='never'/><zlib compression='always'/>\
           <playback compression='off'/><streaming mode='filter'/><clipboard copypaste='no'/>\
           <mouse mode='client'/><filetransfer enable='no'/><gl enable='no'/></graphics>",
    ));
    assert_eq!(
        values(&a, "-spice"),
        [
            "port=5930,addr=127.0.0.1,disable-ticketing=on,image-compression=auto_glz,\
          jpeg-wan-compression=never,zlib-glz-wan-compression=always,playback-compression=off,\
          streaming-video=filter,agent-mouse=on,disable-copy-paste=on,\
          disable-agent-file-xfer=on,seamless-migration=on"
        ]
    );
    // Enabling what QEMU enables anyway says nothing, as libvirt; the XML keeps it.
    let xml = doc(
        "<graphics type='spice' autoport='yes'><clipboard copypaste='yes'/>\
         <mouse mode='server'/><filetransfer enable='yes'/></graphics>",
    );
    let a = argv_of(&xml);
    assert_eq!(
        values(&a, "-spice"),
        ["port=5930,addr=127.0.0.1,disable-ticketing=on,agent-mouse=off,seamless-migration=on"]
    );
    let out = DomainConfig::from_xml(&xml).unwrap().to_xml();
    assert!(
        out.contains("<clipboard copypaste='yes'/>")
            && out.contains("<filetransfer enable='yes'/>"),
        "{out}"
    );
}

#[test]
fn tls_port_follows_libvirt_without_spice_tls() {
    // With autoport libvirt drops the numbers and, with spice_tls off, gives a plain port only.
    let cfg = DomainConfig::from_xml(&doc(
        "<graphics type='spice' port='5900' tlsPort='5901' autoport='yes'/>",
    ))
    .expect("autoport with tlsPort");
    assert!(matches!(
        cfg.devices.graphics,
        Some(Graphics::Spice {
            port: VncPort::Auto,
            ..
        })
    ));
    assert!(!argv_of(&cfg.to_xml())
        .iter()
        .any(|a| a.contains("tls-port")));
    // A fixed or requested TLS port needs certificates: refused, saying so.
    for g in [
        "<graphics type='spice' port='5900' tlsPort='5901' autoport='no'/>",
        "<graphics type='spice' port='5900' tlsPort='-1'/>",
    ] {
        let e = DomainConfig::from_xml(&doc(g)).expect_err(g);
        assert!(matches!(e, XmlError::Invalid { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("graphics@tlsPort") && m.contains("certificates"),
            "{m}"
        );
    }
}

#[test]
fn refusals_name_what_and_why() {
    let spice = "<graphics type='spice' autoport='yes'/>";
    refused(
        &doc("<graphics type='spice' autoport='yes'><gl enable='yes'/></graphics>"),
        "devices.graphics.gl: unsupported: SPICE OpenGL",
    );
    refused(
        &doc("<audio id='1' type='pulseaudio'/>"),
        "unsupported value 'pulseaudio' for domain/devices/audio@type",
    );
    refused(&doc("<audio id='1' type='alsa'/>"), "sound server");
    refused(
        &doc(&format!("{spice}<redirdev bus='usb' type='tcp'/>")),
        "domain/devices/redirdev@type",
    );
    refused(
        &doc("<redirdev bus='usb' type='spicevmc'/>"),
        "devices.redirdevs[0]: refers to <graphics type='spice'>",
    );
    refused(
        &doc(&format!("{spice}<redirdev bus='usb' type='spicevmc'/>"))
            .replace("model='qemu-xhci'", "model='none'"),
        "devices.redirdevs[0]: refers to a USB controller",
    );
    refused(
        &doc(
            "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>",
        ),
        "devices.channels[0]: refers to <graphics type='spice'>",
    );
    refused(
        &doc(&format!(
            "{spice}<channel type='spicevmc'><target type='virtio' name='org.x'/></channel>"
        )),
        "devices.channels[0].name: unsupported",
    );
    refused(
        &doc("<audio id='1' type='spice'/>"),
        "devices.audios[0].backend: refers to <graphics type='spice'>",
    );
    refused(
        &doc("<sound model='ich9'><audio id='2'/></sound><audio id='1' type='none'/>"),
        "devices.sounds[0].audio_id: refers to audio id 2",
    );
    refused(
        &doc("<sound model='ac97'><codec type='duplex'/></sound>"),
        "domain/devices/sound/codec",
    );
    refused(
        &doc("<video><model type='qxl' vgamem='1000'/></video>"),
        "devices.videos[0].model.vgamem_kib",
    );
    refused(
        &doc("<graphics type='spice' port='80' autoport='no'/>"),
        "devices.graphics.port",
    );
    refused(
        &doc("<graphics type='spice' listen='example.org' autoport='yes'/>"),
        "not an IP address",
    );
    refused(
        &doc(
            "<graphics type='spice' autoport='yes'><channel name='main' mode='secure'/></graphics>",
        ),
        "<channel>",
    );
}

#[test]
fn every_sound_model_reaches_qemu() {
    let a = argv_of(&doc(
        "<sound model='ich6'><codec type='duplex'/><codec type='output'/></sound>\
         <sound model='ac97'/><sound model='es1370'/><sound model='sb16'/>\
         <sound model='usb'><address type='usb' bus='0' port='2'/></sound>\
         <audio id='1' type='none'/>",
    ));
    assert_eq!(
        values(&a, "-device")
            .into_iter()
            .filter(|d| d.contains("sound"))
            .collect::<Vec<_>>(),
        [
            "intel-hda,id=sound0",
            "hda-duplex,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio1",
            "hda-output,id=sound0-codec1,bus=sound0.0,cad=1,audiodev=audio1",
            "AC97,id=sound1,audiodev=audio1",
            "ES1370,id=sound2,audiodev=audio1",
            "sb16,id=sound3,audiodev=audio1",
            "usb-audio,id=sound4,audiodev=audio1,bus=usb.0,port=2",
        ]
    );
    // A sound device with no <audio>: the backend libvirt adds (none without SPICE).
    let a = argv_of(&doc("<sound model='ich9'/>"));
    assert_eq!(values(&a, "-audiodev"), ["none,id=audio1"]);
    assert!(a
        .iter()
        .any(|x| x == "hda-duplex,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio1"));
}

#[test]
fn qxl_sizes_reach_qemu_in_bytes() {
    let a = argv_of(&doc(
        "<video><model type='qxl' ram='131072' vram='32768' vgamem='32768' heads='2' primary='yes'/>\
         <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></video>",
    ));
    assert_eq!(
        values(&a, "-device")
            .into_iter()
            .filter(|d| d.starts_with("qxl"))
            .collect::<Vec<_>>(),
        ["qxl-vga,id=video0,max_outputs=2,ram_size=134217728,vram_size=33554432,vgamem_mb=32,bus=pcie.0,addr=0x1"]
    );
}
