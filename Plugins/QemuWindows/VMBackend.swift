import ContainariumCore
import Foundation
import PluginKit
import Synchronization
// Release builds attribute Glibc's `struct stat` to CDispatch (its module map includes
// <sys/stat.h> first); with MemberImportVisibility its members need that import.
#if canImport(CDispatch)
import CDispatch
#endif

#if canImport(Glibc)
import Glibc
#endif

/// Virtual machines on QEMU, driven through QMP: one directory per VM under `stateDir` with its
/// spec, a qcow2 overlay, UEFI variables, an optional software TPM, the QMP, console and VNC
/// sockets, and QEMU's pid file. QEMU runs in a session of its own, so VMs outlive the daemon: a
/// restarted daemon finds them again by pid file and QMP. A supervisor restarts crashed VMs that
/// are set to autostart.
///
/// Isolation: QEMU runs as an unprivileged user (`runAs`, dropped before QEMU starts, with
/// setpriv), under its seccomp sandbox (`-sandbox on` with every optional filter), and its guest
/// network is `restrict=on` unless `guestInternet` says otherwise. The answer-file drive (it
/// carries the administrator password) is detached and deleted once the guest's RDP answers.
final class VMBackend: Sendable {
    struct Media: Codable, Sendable {
        /// "windows" or "linux".
        var os: String
        /// A prepared base disk: VMs get a copy-on-write overlay (fast clones).
        var baseImage: String?
        /// An installation ISO, plus the virtio driver ISO (Windows), with a generated answer file.
        var iso: String?
        var virtioIso: String?
        /// "2k22" or "2k25" (virtio-win's directory names).
        var windowsVersion: String?
        /// Direct kernel boot (the Linux test guest).
        var kernel: String?
        var initrd: String?
        var append: String?
        /// "uefi" (default) or "bios".
        var firmware: String?
        var tpm: Bool?
        var minCPUs: Int?
        var minMemory: String?
        var minDisk: String?
    }

    struct Config: Codable, Sendable {
        var stateDir: String?
        /// "kvm" (default), "tcg", or "auto" (KVM when /dev/kvm opens, else TCG).
        var accel: String?
        var qemu: String?
        var qemuImg: String?
        var swtpm: String?
        var ovmfCode: String?
        var ovmfVars: String?
        /// Where forwarded RDP ports listen, and what `info` reports as the RDP host.
        var rdpListen: String?
        var rdpHost: String?
        var rdpPortFirst: Int?
        var rdpPortLast: Int?
        /// Seconds a guest gets to shut down after the ACPI power button, before a hard stop.
        var shutdownTimeout: Double?
        var bootTimeout: Double?
        var supervise: Bool?
        var images: [String: Media]?
        var node: String?
        /// The user QEMU runs as (default "containarium-vm", which must exist). "root" keeps QEMU
        /// root: insecure, a QEMU escape is then root on the node.
        var runAs: String?
        /// Let guests open connections to the outside (slirp `restrict=off`). Off by default: QEMU's
        /// user network cannot let a guest out while keeping it away from the node's loopback
        /// (slirp sends the guest's 10.0.2.2 to the node's 127.0.0.1), so a guest gets only its
        /// RDP forward and DHCP.
        var guestInternet: Bool?
        /// util-linux's setpriv, which drops to `runAs` before QEMU starts.
        var setpriv: String?
    }

    /// The user QEMU runs as, resolved.
    struct RunAs: Sendable {
        var name: String
        var uid: uid_t
        var gid: gid_t
    }

    /// QEMU's seccomp filter: every optional part on. spawn=deny and elevateprivileges=deny are
    /// why QEMU neither daemonizes (that forks and calls setsid) nor changes its user itself
    /// (-runas, -run-with user= call setgid/setuid after the filter is in place): the plugin
    /// starts it in a session of its own, already as `runAs`.
    static let sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    /// The answer-file drive and its USB device.
    static let answerDrive = "unattend", answerDevice = "unattend-usb"

    /// What is kept per VM (`vm.json`).
    struct Spec: Codable, Sendable {
        var name: String
        var image: String
        var cpus: Int
        var memoryBytes: UInt64
        var diskBytes: UInt64
        var rdpPort: Int
        var autostart: Bool
        var labels: [String: String]
        var owner: String?
        var createdAt: Date
        /// What the user asked for last: "running" or "stopped" (the supervisor honours it).
        var desired: String
        var provisioned: Bool
        var token: String
    }

    let config: Config
    let host: HostServices
    let stateDir: String
    let qemu: String
    let qemuImg: String
    let accel: String
    let node: String
    private let lock = Mutex(())
    static let managedMarker = "containarium-vm"

    init(config: Config, host: HostServices) {
        self.config = config
        self.host = host
        stateDir = config.stateDir ?? "/var/lib/containarium/vms"
        qemu = config.qemu ?? "/usr/bin/qemu-system-x86_64"
        qemuImg = config.qemuImg ?? "/usr/bin/qemu-img"
        let wanted = config.accel ?? "kvm"
        if wanted == "auto" {
            let fd = open("/dev/kvm", O_RDWR)
            if fd >= 0 { close(fd) }
            accel = fd >= 0 && Self.kvmFlavor() == .hardware ? "kvm" : "tcg"
        } else {
            accel = wanted
        }
        node = config.node ?? ProcessInfo.processInfo.hostName
    }

    /// Which KVM this kernel offers. Hardware KVM (kvm_intel, kvm_amd) runs any guest;
    /// PVM (kvm_pvm, the pagetable-based nested hypervisor some cloud VMs offer instead of
    /// nested VT-x) runs only PVM-enabled guest kernels: OVMF stops with an emulation failure
    /// and stock kernels never leave their decompressor.
    enum KVMFlavor: Equatable { case hardware, paravirtual, none }

    static func kvmFlavor(sysModule: String = "/sys/module") -> KVMFlavor {
        let has = { (m: String) in FileManager.default.fileExists(atPath: "\(sysModule)/\(m)") }
        if has("kvm_intel") || has("kvm_amd") { return .hardware }
        if has("kvm_pvm") { return .paravirtual }
        return .none
    }

    // MARK: - paths and specs

    func dir(_ name: String) -> String { (stateDir as NSString).appendingPathComponent(name) }
    func path(_ name: String, _ file: String) -> String { (dir(name) as NSString).appendingPathComponent(file) }

    static func validName(_ s: String) -> Bool {
        guard (1...63).contains(s.utf8.count), let f = s.unicodeScalars.first, ("a"..."z").contains(f) || ("0"..."9").contains(f) else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    func readSpec(_ name: String) throws(ContainariumError) -> Spec {
        guard Self.validName(name) else { throw .invalid("'\(name)' is not a valid instance name") }
        guard let data = FileManager.default.contents(atPath: path(name, "vm.json")) else { throw .notFound("no VM \(name)") }
        return try WireJSON.decode(Spec.self, from: data)
    }

    /// credentials/1 `get`: a Windows VM's Administrator account, whose password was made at
    /// create and is kept root's (0600) in the VM's 0700 directory. The host gives it to the
    /// VM's owner only; it is never logged.
    func credentials(_ name: String) throws(ContainariumError) -> InstanceCredentials {
        _ = try readSpec(name)
        guard let data = FileManager.default.contents(atPath: path(name, "administrator.secret")),
              let password = String(data: data, encoding: .utf8), !password.isEmpty else {
            throw ContainariumError(.failedPrecondition, "\(name) has no administrator password: only Windows VMs get one (a Linux guest's accounts are its own)")
        }
        return InstanceCredentials(username: "Administrator", password: password, protocol: "rdp")
    }

    func writeSpec(_ spec: Spec) throws(ContainariumError) {
        let data = try WireJSON.encode(spec)
        let tmp = path(spec.name, "vm.json.tmp")
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]),
              rename(tmp, path(spec.name, "vm.json")) == 0 else { throw .internal("cannot write the spec of \(spec.name)") }
    }

    func names() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: stateDir)) ?? []).filter {
            Self.validName($0) && FileManager.default.fileExists(atPath: path($0, "vm.json"))
        }.sorted()
    }

    func media(_ image: String) throws(ContainariumError) -> Media {
        guard let m = config.images?[image] else {
            let known = (config.images ?? [:]).keys.sorted().joined(separator: ", ")
            throw .invalid("no VM media '\(image)' on this node (configured: \(known.isEmpty ? "none" : known)); see docs/windows-vms.md")
        }
        return m
    }

    // MARK: - running state

    func pid(_ name: String) -> pid_t? { Processes.alive(pidFile: path(name, "qemu.pid"), expected: path(name, "qmp.sock")) }

    func qmp(_ name: String, timeout: Double = 5) throws(ContainariumError) -> QMP { try QMP(socket: path(name, "qmp.sock"), timeout: timeout) }

    func state(_ name: String) -> InstanceState {
        guard pid(name) != nil else { return .stopped }
        guard let status = try? qmp(name, timeout: 2).execute("query-status")["status"]?.stringValue else { return .unknown }
        switch status {
        case "running": return .running
        case "paused", "suspended", "prelaunch", "inmigrate": return .frozen
        case "shutdown": return .stopping
        case "guest-panicked", "internal-error", "io-error": return .error
        default: return .unknown
        }
    }

    func info(_ name: String) throws(ContainariumError) -> InstanceInfo {
        let spec = try readSpec(name)
        let st = state(name)
        let usage = pid(name).flatMap(Processes.usage)
        var labels = spec.labels
        if let owner = spec.owner { labels["owner"] = owner }
        let diskUsed = Self.allocatedBytes(path(name, "disk.qcow2"))
        var info = InstanceInfo(
            name: name, type: "vm", state: st, image: spec.image, ipv4: [], cpuLimit: String(spec.cpus),
            memoryLimitBytes: spec.memoryBytes, diskLimitBytes: spec.diskBytes,
            cpuUsageNanoseconds: st == .running ? usage?.cpuNanoseconds : nil, memoryUsageBytes: st == .running ? usage?.rssBytes : nil,
            diskUsageBytes: diskUsed, createdAt: spec.createdAt, autostart: spec.autostart, nesting: false, labels: labels,
            backend: "qemu-windows", node: node, provisioned: spec.provisioned)
        info.endpoints = ["rdp": "\(config.rdpHost ?? "127.0.0.1"):\(spec.rdpPort)"]
        return info
    }

    /// Bytes a file occupies on disk (st_blocks), nil when it cannot be read.
    static func allocatedBytes(_ file: String) -> UInt64? {
        let sb = UnsafeMutablePointer<stat>.allocate(capacity: 1)
        defer { sb.deallocate() }
        guard stat(file, sb) == 0 else { return nil }
        return UInt64(sb.pointee.st_blocks) * 512
    }

    func list() -> InstanceList {
        InstanceList(instances: names().compactMap { try? info($0) })
    }

    // MARK: - create

    func create(_ r: InstanceCreateRequest, _ ctx: OperationContext) throws(ContainariumError) -> InstanceInfo {
        guard Self.validName(r.name) else { throw .invalid("'\(r.name)' is not a valid instance name") }
        let m = try media(r.image)
        let cpus = try r.cpu.map { c throws(ContainariumError) in try CPULimit(parsing: c).cpuCount } ?? max(2, m.minCPUs ?? 1)
        let minMemory = try m.minMemory.map { s throws(ContainariumError) in try ByteSize(parsing: s).bytes } ?? 0
        let minDisk = try m.minDisk.map { s throws(ContainariumError) in try ByteSize(parsing: s).bytes } ?? 0
        let memory = r.memoryBytes ?? max(m.os == "windows" ? 4 << 30 : 512 << 20, minMemory)
        let disk = r.diskBytes ?? max(m.os == "windows" ? 40_000_000_000 : 1 << 30, minDisk)
        // Minimums for the OS, with the numbers.
        if let min = m.minCPUs, cpus < min { throw .invalid("\(r.image) needs at least \(min) CPUs, not \(cpus)") }
        if let s = m.minMemory, let min = try? ByteSize(parsing: s), memory < min.bytes {
            throw .invalid("\(r.image) needs at least \(min) of memory, not \(ByteSize(bytes: memory))")
        }
        if let s = m.minDisk, let min = try? ByteSize(parsing: s), disk < min.bytes {
            throw .invalid("\(r.image) needs at least \(min) of disk, not \(ByteSize(bytes: disk))")
        }
        if !(r.gpus ?? []).isEmpty { throw ContainariumError(.unsupported, "GPU passthrough to VMs is not supported by qemu-windows") }
        try Labels.validate(r.labels)
        // Before anything is made: the user QEMU will run as must exist.
        _ = try runAs()
        let steps = m.os == "windows" ? 5 : 4
        ctx.progress(instance: r.name, step: 1, of: steps, "Preparing VM \(r.name)")
        let token = UUID().uuidString
        let spec: Spec = try lock.withLock { _ throws(ContainariumError) -> Spec in
            guard !FileManager.default.fileExists(atPath: dir(r.name)) else { throw .alreadyExists("VM \(r.name) already exists") }
            do {
                try FileManager.default.createDirectory(atPath: dir(r.name), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .internal("cannot create \(dir(r.name))", cause: "\(error)")
            }
            let spec = Spec(name: r.name, image: r.image, cpus: cpus, memoryBytes: memory, diskBytes: disk, rdpPort: try freePort(),
                            autostart: r.autostart, labels: r.labels, owner: r.account?.name, createdAt: Date(), desired: "running",
                            provisioned: false, token: token)
            try writeSpec(spec)
            return spec
        }
        do throws(ContainariumError) {
            try ctx.checkCancelled()
            try prepareDisk(spec, m)
            if (m.firmware ?? "uefi") == "uefi" {
                let vars = config.ovmfVars ?? "/usr/share/OVMF/OVMF_VARS_4M.fd"
                do { try FileManager.default.copyItem(atPath: vars, toPath: path(r.name, "OVMF_VARS.fd")) } catch {
                    throw ContainariumError(.failedPrecondition, "cannot copy the UEFI variables template \(vars) (install ovmf)", cause: "\(error)")
                }
            }
            if m.os == "windows" {
                ctx.progress(instance: r.name, step: 2, of: steps, "Writing the answer file (administrator password kept as a secret)")
                try writeAnswerFile(spec, m)
            }
            try ctx.checkCancelled()
            ctx.progress(instance: r.name, step: steps - 1, of: steps, "Starting QEMU (\(accel))")
            try boot(spec, m)
            ctx.progress(instance: r.name, step: steps, of: steps, "Waiting for the VM to run")
            try waitRunning(r.name, timeout: config.bootTimeout ?? 60)
            var done = spec
            done.provisioned = true
            try writeSpec(done)
            return try info(r.name)
        } catch {
            destroy(r.name)
            throw error
        }
    }

    /// A TCP port in the RDP range that no VM has and nothing listens on.
    func freePort() throws(ContainariumError) -> Int {
        let taken = Set(names().compactMap { try? readSpec($0).rdpPort })
        let first = config.rdpPortFirst ?? 33890, last = config.rdpPortLast ?? 34889
        for port in first...max(first, last) where !taken.contains(port) && Self.portFree(port, host: config.rdpListen ?? "127.0.0.1") {
            return port
        }
        throw ContainariumError(.resourceExhausted, "no free RDP port in \(first)-\(last)")
    }

    static func portFree(_ port: Int, host: String) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host == "0.0.0.0" ? "0.0.0.0" : host)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    func prepareDisk(_ spec: Spec, _ m: Media) throws(ContainariumError) {
        var args = [qemuImg, "create", "-q", "-f", "qcow2"]
        if let base = m.baseImage {
            guard FileManager.default.fileExists(atPath: base) else { throw ContainariumError(.failedPrecondition, "base image \(base) is missing") }
            args += ["-F", "qcow2", "-b", base]
        }
        args += [path(spec.name, "disk.qcow2"), String(spec.diskBytes)]
        let r = try Processes.run(args, timeout: 60)
        guard r.status == 0 else { throw ContainariumError(.internal, "qemu-img create failed", cause: r.output) }
    }

    func writeAnswerFile(_ spec: Spec, _ m: Media) throws(ContainariumError) {
        let password = Unattend.generatePassword()
        // The secret: 0600, in the VM's 0700 directory; never in labels, logs or info.
        guard FileManager.default.createFile(atPath: path(spec.name, "administrator.secret"), contents: Data(password.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw .internal("cannot store the administrator password of \(spec.name)")
        }
        let xml = Unattend.xml(Unattend.Settings(computerName: Unattend.computerName(for: spec.name), administratorPassword: password,
                                                 driverDirectory: m.windowsVersion ?? "2k22"))
        let ua = path(spec.name, "unattend")
        do {
            try FileManager.default.createDirectory(atPath: ua, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .internal("cannot create \(ua)", cause: "\(error)")
        }
        guard FileManager.default.createFile(atPath: (ua as NSString).appendingPathComponent("autounattend.xml"), contents: Data(xml.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw .internal("cannot write the answer file of \(spec.name)")
        }
    }

    /// QEMU's command line for a VM (argv, no shell).
    func arguments(_ spec: Spec, _ m: Media) -> [String] {
        var a = [qemu, "-name", "guest=\(spec.name),debug-threads=on", "-machine", "q35,accel=\(accel)",
                 "-cpu", accel == "kvm" ? "host" : "max", "-smp", String(spec.cpus), "-m", "\(max(1, spec.memoryBytes >> 20))M",
                 "-nodefaults", "-no-user-config", "-display", "none", "-boot", "strict=on", "-sandbox", Self.sandbox]
        if (m.firmware ?? "uefi") == "uefi" {
            a += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(config.ovmfCode ?? "/usr/share/OVMF/OVMF_CODE_4M.fd")",
                  "-drive", "if=pflash,format=raw,unit=1,file=\(path(spec.name, "OVMF_VARS.fd"))"]
        }
        a += ["-blockdev", "driver=file,filename=\(path(spec.name, "disk.qcow2")),node-name=file0",
              "-blockdev", "driver=qcow2,file=file0,node-name=disk0", "-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
        if let iso = m.iso {
            a += ["-drive", "file=\(iso),media=cdrom,readonly=on,if=ide,index=0"]
            if let v = m.virtioIso { a += ["-drive", "file=\(v),media=cdrom,readonly=on,if=ide,index=1"] }
        }
        // A screen for the VNC console (standard VGA: UEFI GOP and Windows' basic display
        // driver need nothing more), and a USB tablet so the pointer lands where it is seen.
        a += ["-device", "VGA", "-device", "qemu-xhci,id=xhci", "-device", "usb-tablet,bus=xhci.0"]
        if FileManager.default.fileExists(atPath: path(spec.name, "unattend/autounattend.xml")) {
            // Windows Setup looks for autounattend.xml on removable media: a read-only FAT view
            // of the directory, on USB, until the installation is done (finishInstall).
            a += ["-drive", "file=fat:ro:\(path(spec.name, "unattend")),format=raw,if=none,id=\(Self.answerDrive),readonly=on",
                  "-device", "usb-storage,drive=\(Self.answerDrive),bus=xhci.0,id=\(Self.answerDevice)"]
        }
        if let k = m.kernel {
            a += ["-kernel", k]
            if let i = m.initrd { a += ["-initrd", i] }
            if let ap = m.append { a += ["-append", ap] }
        }
        if m.tpm == true {
            a += ["-chardev", "socket,id=chrtpm,path=\(path(spec.name, "swtpm.sock"))", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                  "-device", "tpm-tis,tpmdev=tpm0"]
        }
        // restrict=on: the guest reaches neither the node (10.0.2.2 is its loopback) nor the
        // outside; hostfwd (RDP) still works, it is not guest-initiated.
        let restrict = config.guestInternet == true ? "off" : "on"
        a += ["-netdev", "user,id=net0,restrict=\(restrict),hostfwd=tcp:\(config.rdpListen ?? "127.0.0.1"):\(spec.rdpPort)-:3389",
              "-device", "virtio-net-pci,netdev=net0",
              "-qmp", "unix:\(path(spec.name, "qmp.sock")),server=on,wait=off",
              "-chardev", "socket,id=console0,path=\(path(spec.name, "console.sock")),server=on,wait=off", "-serial", "chardev:console0",
              "-vnc", "unix:\(path(spec.name, "vnc.sock"))"]
        return a
    }

    // MARK: - privileges

    /// The user QEMU runs as; nil when the config says "root".
    func runAs() throws(ContainariumError) -> RunAs? {
        let name = config.runAs ?? "containarium-vm"
        if name == "root" { return nil }
        guard let (uid, gid) = Self.lookupUser(name) else {
            throw ContainariumError(.failedPrecondition,
                "QEMU runs as the user '\(name)' (qemu-windows config runAs), which does not exist on this node: create it with "
                + "`useradd --system --no-create-home --shell /usr/sbin/nologin \(name)`, or set \"runAs\": \"root\" (insecure: QEMU then runs as root)")
        }
        guard uid != 0 else { throw .invalid("runAs '\(name)' has uid 0: say \"root\" to run QEMU as root") }
        return RunAs(name: name, uid: uid, gid: gid)
    }

    static func lookupUser(_ name: String) -> (uid_t, gid_t)? {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &pw, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (pw.pw_uid, pw.pw_gid)
    }

    static func lookupGroup(_ name: String) -> gid_t? {
        var gr = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getgrnam_r(name, &gr, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return gr.gr_gid
    }

    /// setpriv's argv prefix: the user's uid and gid, no supplementary group but kvm (for
    /// /dev/kvm), no inheritable capability, and no_new_privs.
    func dropPrivileges(_ user: RunAs) -> [String] {
        let groups = accel == "kvm" ? Self.lookupGroup("kvm").map { "--groups=\($0)" } : nil
        return [config.setpriv ?? "/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", groups ?? "--clear-groups",
                "--inh-caps=-all", "--no-new-privs", "--"]
    }

    /// What QEMU opens as `runAs`: the state directory (traverse), the VM directory (group
    /// writable and sticky: QEMU makes its sockets there but cannot remove or rename root's
    /// files), the disk and the UEFI variables (read-write), the answer file (read-only, until
    /// the installation is done) and swtpm's socket. Never the spec, the log, the pid file or
    /// administrator.secret, which stay root's and 0600; nothing is world-readable. Only entries
    /// that are root's and no symbolic link are changed (the user may put links in the directory).
    func grantAccess(_ name: String, to user: RunAs?) throws(ContainariumError) {
        guard let user else {
            _ = chmod(dir(name), 0o700)
            return
        }
        func give(_ file: String, _ mode: mode_t, directory: Bool, required: Bool) throws(ContainariumError) {
            var st = stat()
            guard lstat(file, &st) == 0 else {
                if required { throw ContainariumError(.internal, "cannot give \(file) to \(user.name)", cause: String(cString: strerror(errno))) }
                return
            }
            let type = st.st_mode & S_IFMT
            let expected = directory ? type == S_IFDIR : (type == S_IFREG || type == S_IFSOCK)
            guard st.st_uid == 0, expected else {
                // Not the plugin's (the user may have made it): left as it is.
                if required { throw ContainariumError(.failedPrecondition, "\(file) is not root's \(directory ? "directory" : "file") (refusing to hand it to \(user.name))") }
                return
            }
            guard chown(file, uid_t.max, user.gid) == 0, chmod(file, mode) == 0 else {
                throw ContainariumError(.internal, "cannot give \(file) to \(user.name)", cause: String(cString: strerror(errno)))
            }
        }
        try give(stateDir, 0o710, directory: true, required: true)
        try give(dir(name), 0o1770, directory: true, required: true)
        try give(path(name, "disk.qcow2"), 0o660, directory: false, required: true)
        try give(path(name, "OVMF_VARS.fd"), 0o660, directory: false, required: false)
        try give(path(name, "unattend"), 0o750, directory: true, required: false)
        try give(path(name, "unattend/autounattend.xml"), 0o640, directory: false, required: false)
        try give(path(name, "swtpm.sock"), 0o660, directory: false, required: false)
    }

    /// Start QEMU for a VM, as `runAs`, and return once its monitor answers (QEMU has opened
    /// everything and runs the guest), or fail with what QEMU said.
    func boot(_ spec: Spec, _ m: Media) throws(ContainariumError) {
        let user = try runAs()
        if m.tpm == true { try startTPM(spec.name) }
        for f in ["qmp.sock", "console.sock", "vnc.sock", "qemu.pid"] { unlink(path(spec.name, f)) }
        try grantAccess(spec.name, to: user)
        let log = path(spec.name, "qemu.log")
        let logStart = (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? NSNumber)?.uint64Value ?? 0
        let argv = (user.map(dropPrivileges) ?? []) + arguments(spec, m)
        let child = try Processes.spawn(argv, log: log, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        func fail(_ message: String) -> ContainariumError {
            if !Processes.gone(child) {
                kill(child, SIGKILL)
                _ = Processes.waitGone(child, timeout: 5)
            }
            unlink(path(spec.name, "qemu.pid"))
            var said = ""
            if let h = FileHandle(forReadingAtPath: log) {
                defer { try? h.close() }
                try? h.seek(toOffset: logStart)
                said = String(decoding: (try? h.readToEnd()) ?? Data(), as: UTF8.self)
            }
            var hint = ""
            if let user, said.contains("Permission denied") {
                hint = " (QEMU runs as \(user.name): it must be able to reach \(stateDir) and read the VM's media and firmware)"
            }
            return ContainariumError(.internal, "\(message)\(hint)", cause: String(said.suffix(2000)))
        }
        // The pid file is the plugin's (root's, so QEMU cannot point it elsewhere); setpriv
        // execs QEMU, so the pid is QEMU's.
        guard FileManager.default.createFile(atPath: path(spec.name, "qemu.pid"), contents: Data("\(child)\n".utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw fail("cannot write the pid file of \(spec.name)")
        }
        let deadline = Date().addingTimeInterval(60)
        while (try? qmp(spec.name, timeout: 2)) == nil {
            if Processes.gone(child) { throw fail("QEMU did not start \(spec.name)") }
            if Date() > deadline { throw fail("QEMU did not open its monitor for \(spec.name) within 60 s") }
            usleep(50_000)
        }
    }

    func startTPM(_ name: String) throws(ContainariumError) {
        let state = path(name, "tpm")
        try? FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if Processes.alive(pidFile: path(name, "swtpm.pid"), expected: state) != nil { return }
        let r = try Processes.run([config.swtpm ?? "/usr/bin/swtpm", "socket", "--tpm2", "--tpmstate", "dir=\(state)",
                                   "--ctrl", "type=unixio,path=\(path(name, "swtpm.sock"))", "--pid", "file=\(path(name, "swtpm.pid"))",
                                   "--log", "file=\(path(name, "swtpm.log"))", "--daemon"], timeout: 30)
        guard r.status == 0 else { throw ContainariumError(.internal, "swtpm did not start for \(name)", cause: r.output) }
        // Its socket is handed to QEMU's group by grantAccess: wait for it to be there.
        let deadline = Date().addingTimeInterval(5)
        while !FileManager.default.fileExists(atPath: path(name, "swtpm.sock")) && Date() < deadline { usleep(20_000) }
        _ = chmod(path(name, "swtpm.pid"), 0o600)
    }

    func waitRunning(_ name: String, timeout: Double) throws(ContainariumError) {
        let deadline = Date().addingTimeInterval(timeout)
        var last = "not started"
        while Date() < deadline {
            if pid(name) == nil { last = "QEMU exited: " + ((try? String(contentsOfFile: path(name, "qemu.log"), encoding: .utf8)).map { String($0.suffix(500)) } ?? "") }
            else if let status = try? qmp(name, timeout: 2).execute("query-status")["status"]?.stringValue {
                if status == "running" { return }
                last = "status \(status)"
            }
            usleep(100_000)
        }
        throw ContainariumError(.timeout, "\(name) is not running after \(Int(timeout)) s (\(last))")
    }

    // MARK: - lifecycle

    func start(_ name: String) throws(ContainariumError) -> InstanceInfo {
        var spec = try readSpec(name)
        if pid(name) == nil {
            try boot(spec, try media(spec.image))
            try waitRunning(name, timeout: config.bootTimeout ?? 60)
        } else if state(name) == .frozen {
            try qmp(name).execute("cont")
        }
        spec.desired = "running"
        try lock.withLock { _ throws(ContainariumError) in try writeSpec(spec) }
        return try info(name)
    }

    /// ACPI power button, then (after the deadline, or at once with `force`) a hard stop.
    func stop(_ name: String, force: Bool) throws(ContainariumError) -> InstanceInfo {
        var spec = try readSpec(name)
        spec.desired = "stopped"
        try lock.withLock { _ throws(ContainariumError) in try writeSpec(spec) }
        try halt(name, force: force)
        return try info(name)
    }

    func halt(_ name: String, force: Bool) throws(ContainariumError) {
        guard let p = pid(name) else { return }
        if !force {
            do {
                try qmp(name).execute("system_powerdown")
                if Processes.waitGone(p, timeout: config.shutdownTimeout ?? 60) { cleanupSockets(name); return }
                host.log(.warning, "\(name) ignored the power button for \(Int(config.shutdownTimeout ?? 60)) s; stopping it hard")
            } catch {
                host.log(.warning, "\(name): graceful shutdown failed (\(error.message)); stopping it hard")
            }
        }
        _ = try? qmp(name, timeout: 2).execute("quit")
        if !Processes.waitGone(p, timeout: 5) {
            kill(p, SIGKILL)
            _ = Processes.waitGone(p, timeout: 5)
        }
        cleanupSockets(name)
    }

    func cleanupSockets(_ name: String) {
        for f in ["qmp.sock", "console.sock", "vnc.sock", "qemu.pid"] { unlink(path(name, f)) }
    }

    func restart(_ name: String) throws(ContainariumError) -> InstanceInfo {
        try halt(name, force: false)
        return try start(name)
    }

    /// Kill the VM and its TPM, and remove everything of it.
    func destroy(_ name: String) {
        if let p = pid(name) {
            _ = try? qmp(name, timeout: 1).execute("quit")
            if !Processes.waitGone(p, timeout: 3) { kill(p, SIGKILL); _ = Processes.waitGone(p, timeout: 5) }
        }
        if let t = Processes.alive(pidFile: path(name, "swtpm.pid"), expected: path(name, "tpm")) {
            kill(t, SIGTERM)
            if !Processes.waitGone(t, timeout: 3) { kill(t, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: dir(name))
    }

    func remove(_ r: InstanceRef) throws(ContainariumError) {
        _ = try readSpec(r.name)
        if pid(r.name) != nil && r.force != true {
            throw ContainariumError(.failedPrecondition, "VM \(r.name) is running; stop it first or delete with --force")
        }
        destroy(r.name)
        if FileManager.default.fileExists(atPath: dir(r.name)) { throw .internal("could not remove \(dir(r.name))") }
    }

    /// CPU and memory change while the VM is stopped; the disk grows at any time (live through
    /// QMP block_resize) and never shrinks.
    func resize(_ r: ResizeRequest) throws(ContainariumError) -> InstanceInfo {
        var spec = try readSpec(r.name)
        let running = pid(r.name) != nil
        if r.cpu != nil || r.memoryBytes != nil {
            guard !running else {
                throw ContainariumError(.failedPrecondition, "stop \(r.name) to change its CPUs or memory (the disk can grow while it runs)")
            }
            if let c = r.cpu { spec.cpus = try CPULimit(parsing: c).cpuCount }
            if let m = r.memoryBytes { spec.memoryBytes = m }
            let media = try media(spec.image)
            if let min = media.minCPUs, spec.cpus < min { throw .invalid("\(spec.image) needs at least \(min) CPUs") }
            if let s = media.minMemory, let min = try? ByteSize(parsing: s), spec.memoryBytes < min.bytes { throw .invalid("\(spec.image) needs at least \(min) of memory") }
        }
        if let d = r.diskBytes {
            guard d >= spec.diskBytes else { throw .invalid("disks only grow: \(ByteSize(bytes: d)) is below \(ByteSize(bytes: spec.diskBytes))") }
            if d > spec.diskBytes {
                if running {
                    try qmp(r.name).execute("block_resize", ["node-name": .string("disk0"), "size": .number(Double(d))])
                } else {
                    let res = try Processes.run([qemuImg, "resize", "-q", path(r.name, "disk.qcow2"), String(d)], timeout: 60)
                    guard res.status == 0 else { throw ContainariumError(.internal, "qemu-img resize failed", cause: res.output) }
                }
                spec.diskBytes = d
            }
        }
        try lock.withLock { _ throws(ContainariumError) in try writeSpec(spec) }
        return try info(r.name)
    }

    // MARK: - node

    func capacity() -> NodeCapacity {
        var s = statvfs()
        try? FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let total: UInt64 = statvfs(stateDir, &s) == 0 ? UInt64(s.f_blocks) * UInt64(s.f_frsize) : 0
        let free: UInt64 = statvfs(stateDir, &s) == 0 ? UInt64(s.f_bavail) * UInt64(s.f_frsize) : 0
        let mem = Self.meminfo()
        let all = names()
        return NodeCapacity(node: node, cpus: ProcessInfo.processInfo.activeProcessorCount, memoryTotalBytes: mem.total, memoryUsedBytes: mem.total - mem.available,
                            diskTotalBytes: total, diskUsedBytes: total - min(total, free), pool: nil, instances: all.count,
                            runningInstances: all.filter { pid($0) != nil }.count, backendVersion: "qemu (\(accel))")
    }

    static func meminfo() -> (total: UInt64, available: UInt64) {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        func value(_ key: String) -> UInt64 {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }),
                  let kb = line.split(separator: " ").dropFirst().first.flatMap({ UInt64($0) }) else { return 0 }
            return kb * 1024
        }
        return (value("MemTotal"), value("MemAvailable"))
    }

    func health() -> JSONValue {
        var problems: [String] = []
        if !FileManager.default.isExecutableFile(atPath: qemu) { problems.append("\(qemu) is missing (install qemu-system-x86)") }
        if !FileManager.default.isExecutableFile(atPath: qemuImg) { problems.append("\(qemuImg) is missing (install qemu-utils)") }
        var warnings: [String] = []
        do {
            if try runAs() == nil {
                warnings.append("QEMU runs as root (runAs \"root\"): a QEMU escape is root on this node")
            } else if !FileManager.default.isExecutableFile(atPath: config.setpriv ?? "/usr/bin/setpriv") {
                problems.append("\(config.setpriv ?? "/usr/bin/setpriv") is missing (install util-linux)")
            }
        } catch {
            problems.append(error.message)
        }
        if accel == "kvm" {
            let fd = open("/dev/kvm", O_RDWR)
            if fd < 0 { problems.append("/dev/kvm cannot be opened: \(String(cString: strerror(errno)))") } else { close(fd) }
            if case .paravirtual = Self.kvmFlavor() {
                warnings.append("/dev/kvm is PVM (kvm_pvm, nested virtualization without VT-x): it runs only guest kernels built for PVM; "
                    + "UEFI firmware, stock kernels and Windows do not boot; use accel \"tcg\" or a host with VT-x/AMD-V")
            }
        }
        let status = !problems.isEmpty ? "down" : warnings.isEmpty ? "ok" : "degraded"
        let detail = problems.isEmpty && warnings.isEmpty ? "qemu with \(accel), \(names().count) VMs in \(stateDir)" : (problems + warnings).joined(separator: "; ")
        return .object(["status": .string(status), "detail": .string(detail)])
    }

    // MARK: - supervision and events

    /// Detach the answer file of VMs that finished installing, and (with `restart`) restart VMs
    /// that should run (autostart, last asked to run) but whose QEMU is gone.
    func superviseOnce(restart: Bool = true) {
        for name in names() where FileManager.default.fileExists(atPath: path(name, "unattend")) { finishInstall(name) }
        guard restart else { return }
        for name in names() {
            guard let spec = try? readSpec(name), spec.provisioned, spec.autostart, spec.desired == "running", pid(name) == nil,
                  let m = try? media(spec.image) else { continue }
            host.log(.warning, "VM \(name) is not running although it should: restarting it")
            do {
                try boot(spec, m)
                host.emit(type: "instance.changed", ["name": name, "action": "restarted"])
            } catch {
                host.log(.error, "could not restart VM \(name): \(error.message)")
            }
        }
    }

    // MARK: - the end of the installation

    /// The answer file carries the administrator password, so it stays with the VM only while
    /// Windows installs. The installation is done when the guest's RDP answers (Remote Desktop
    /// is switched on by the answer file's specialize pass, and Setup caches a copy of the
    /// answer file in %WINDIR%\Panther for its passes after a reboot): then the USB drive is unplugged
    /// from the running VM (QMP device_del) and the directory deleted, so no later boot has it.
    /// administrator.secret stays (0600, root's) for the owner.
    func finishInstall(_ name: String) {
        guard let spec = try? readSpec(name), pid(name) != nil, Self.rdpAnswers(host: config.rdpListen ?? "127.0.0.1", port: spec.rdpPort) else { return }
        do {
            try detachAnswerDrive(name)
            try FileManager.default.removeItem(atPath: path(name, "unattend"))
            host.log(.info, "\(name): installation done (RDP answers): the answer-file drive is detached and deleted")
        } catch let error as ContainariumError {
            host.log(.warning, "\(name): cannot detach the answer-file drive yet: \(error.message)")
        } catch {
            host.log(.warning, "\(name): cannot delete the answer file: \(error)")
        }
    }

    /// Unplug the answer-file USB device and wait until its drive is gone from query-block.
    func detachAnswerDrive(_ name: String) throws(ContainariumError) {
        let q = try qmp(name)
        func drive() throws(ContainariumError) -> JSONValue? {
            try q.execute("query-block").items?.first { $0["device"]?.stringValue == Self.answerDrive }
        }
        guard let d = try drive() else { return }
        // The drive's qdev is the SCSI disk inside the USB device (".../<id>/<bus>/legacy[0]"):
        // unplug the USB device itself (older VMs' device has no id, only this path).
        var device = Self.answerDevice
        if let qdev = d["qdev"]?.stringValue {
            var parts = qdev.split(separator: "/", omittingEmptySubsequences: false)
            if parts.last?.hasPrefix("legacy[") == true, parts.count > 3 { parts.removeLast(2) }
            device = parts.joined(separator: "/")
        }
        try q.execute("device_del", ["id": .string(device)])
        let deadline = Date().addingTimeInterval(10)
        while try drive() != nil {
            guard Date() < deadline else { throw ContainariumError(.timeout, "the answer-file drive is still attached after device_del") }
            usleep(100_000)
        }
    }

    /// Whether something in the guest answers on the RDP port: an RDP connection request
    /// (X.224, with a routing cookie line) through the forward gets any reply. slirp accepts the
    /// node side of a forward even when nothing listens in the guest, but then sends nothing.
    static func rdpAnswers(host: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host == "0.0.0.0" ? "127.0.0.1" : host)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return false }
        let cookie = Array("Cookie: mstshash=containarium\r\n".utf8)
        let negotiation: [UInt8] = [0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]  // RDP_NEG_REQ: TLS and CredSSP
        let x224: [UInt8] = [UInt8(6 + cookie.count + negotiation.count), 0xE0, 0, 0, 0, 0, 0] + cookie + negotiation
        let length = 4 + x224.count
        let tpkt: [UInt8] = [0x03, 0x00, UInt8(length >> 8), UInt8(length & 0xFF)] + x224
        guard tpkt.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == tpkt.count else { return false }
        var reply = [UInt8](repeating: 0, count: 64)
        return reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } > 0
    }

    /// Report state changes until cancelled (instances/1 `watch`).
    func watch(_ ctx: OperationContext) throws(ContainariumError) -> Empty {
        host.emit(type: "instances.watch.connected", ["backend": "qemu-windows"])
        var last: [String: InstanceState] = [:]
        while !ctx.isCancelled {
            var now: [String: InstanceState] = [:]
            for name in names() { now[name] = state(name) }
            for (name, st) in now where last[name] != st { host.emit(type: "instance.changed", ["name": name, "action": st.rawValue]) }
            for name in last.keys where now[name] == nil { host.emit(type: "instance.changed", ["name": name, "action": "deleted"]) }
            last = now
            usleep(1_000_000)
        }
        throw ContainariumError(.cancelled, "watch cancelled")
    }

    /// A connected stream socket to the VM's serial console or VNC server (console/1).
    func openConsole(_ name: String, kind: String) throws(ContainariumError) -> (Int32, String) {
        _ = try readSpec(name)
        guard pid(name) != nil else { throw ContainariumError(.failedPrecondition, "VM \(name) is not running") }
        let (file, proto): (String, String) = switch kind {
        case "vnc": ("vnc.sock", "vnc")
        case "serial", "": ("console.sock", "raw")
        default: ("", "")
        }
        guard !file.isEmpty else { throw .invalid("console kind must be serial or vnc, not \(kind)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .internal("socket() failed") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path(name, file).utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else {
            close(fd)
            throw ContainariumError(.unavailable, "cannot reach the \(proto) console of \(name)")
        }
        return (fd, proto)
    }
}
