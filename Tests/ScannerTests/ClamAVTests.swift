import ContainariumCore
import Foundation
import PluginHost
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The clamav plugin (Plugins/ClamAV) loaded by the real host, scanning with a real clamd of
/// the test's own (its own config, socket and signature database in a temp dir) and with the
/// real clamscan when that clamd is stopped. The database is a hash signature file (.hdb) of
/// a planted file and of the EICAR test file: ClamAV's official database is not reachable here.
@Suite("Scanner plugin: clamav (scanner/1)", .serialized, ScannerEnv.needsClamAV)
struct ClamAVTests {
    /// A test bed: plugins dir, a signature database, a roots dir with a tree that looks like
    /// a container's root filesystem, a clean tree, and files outside the roots.
    struct Bed {
        let work: URL
        let plugins: URL
        let database: URL
        let roots: URL
        let infected: URL
        let clean: URL
        let outside: URL

        init() throws {
            work = try TestEnv.tempDir("clamav")
            plugins = work.appendingPathComponent("plugins")
            _ = try Scanners.pluginDir(in: plugins, id: "clamav", source: "ClamAV", library: "libClamAVScanner.so")
            roots = work.appendingPathComponent("pools")
            infected = roots.appendingPathComponent("containers/alice/rootfs")
            clean = roots.appendingPathComponent("containers/bob/rootfs")
            outside = work.appendingPathComponent("outside")
            database = work.appendingPathComponent("db")
            try FileManager.default.createDirectory(at: database, withIntermediateDirectories: true)

            // The planted "malware": random bytes, so its hash is this run's own.
            let planted = Data((0..<4096).map { _ in UInt8.random(in: 0...255) })
            try ScannerEnv.write(planted, to: infected.appendingPathComponent("home/alice/evil.bin"))
            try ScannerEnv.write(Scanners.eicar, to: infected.appendingPathComponent("tmp/eicar.com"))
            try ScannerEnv.write(Data("alice-box\n".utf8), to: infected.appendingPathComponent("etc/hostname"))
            try ScannerEnv.write(Data("#!/bin/sh\necho hello\n".utf8), to: infected.appendingPathComponent("usr/local/bin/hello"))
            // The same planted file outside the roots, reachable from inside only through
            // symbolic links (a file link and a directory link), which the scan must not follow.
            try ScannerEnv.write(planted, to: outside.appendingPathComponent("evil-copy.bin"))
            try FileManager.default.createSymbolicLink(
                at: infected.appendingPathComponent("home/alice/link-to-outside.bin"), withDestinationURL: outside.appendingPathComponent("evil-copy.bin"))
            try FileManager.default.createSymbolicLink(at: infected.appendingPathComponent("mnt"), withDestinationURL: outside)
            // A symbolic link that leads out of the roots altogether, as a scan target.
            try FileManager.default.createSymbolicLink(at: roots.appendingPathComponent("escape"), withDestinationURL: outside)

            for (i, text) in ["root:x:0:0:root:/root:/bin/bash\n", "127.0.0.1 localhost\n", "bob-box\n"].enumerated() {
                try ScannerEnv.write(Data(text.utf8), to: clean.appendingPathComponent("etc/file\(i)"))
            }
            try ScannerEnv.write(Data(repeating: 0x41, count: 100_000), to: clean.appendingPathComponent("var/lib/big.dat"))

            // The database: real sigtool hashes of both files, renamed.
            let sig = try Run.run(Scanners.sigtool, ["--md5", infected.appendingPathComponent("home/alice/evil.bin").path, infected.appendingPathComponent("tmp/eicar.com").path])
            guard sig.status == 0 else { throw TestFailure("sigtool --md5 failed: \(sig.output)") }
            let lines = sig.stdout.split(separator: "\n").map { String($0) }
            guard lines.count == 2 else { throw TestFailure("sigtool --md5 answered: \(sig.output)") }
            func renamed(_ line: String, _ name: String) -> String { line.split(separator: ":").prefix(2).joined(separator: ":") + ":" + name }
            let hdb = renamed(lines[0], "Containarium-Test-Signature") + "\n" + renamed(lines[1], "Eicar-Test-Signature") + "\n"
            try Data(hdb.utf8).write(to: database.appendingPathComponent("containarium-test.hdb"))
        }

        func config(socket: String, _ extra: [String: JSONValue] = [:]) -> JSONValue {
            var c: [String: JSONValue] = [
                "clamdSocket": .string(socket), "databaseDirectory": .string(database.path), "roots": .array([.string(roots.path)]),
                "parallel": .number(2), "timeoutSeconds": .number(600),
            ]
            for (k, v) in extra { c[k] = v }
            return .object(c)
        }

        func cleanup() { TestEnv.cleanup(work) }
    }

    static let expected = [
        "/home/alice/evil.bin Containarium-Test-Signature",
        "/tmp/eicar.com Eicar-Test-Signature",
    ]

    static func pairs(_ report: ScanReport) -> [String] { report.findings.map { "\($0.path) \($0.rule)" } }

    @Test("clamd (zFILDES): finds the planted file and EICAR by in-root path, a clean tree is clean, links out are not followed; clamscan when clamd stops",
          arguments: ["in-process", "process"])
    func clamdAndFallback(isolation: String) async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let clamd = try ClamdFixture(in: bed.work.appendingPathComponent("clamd"), database: bed.database)
        defer { clamd.stop() }
        let record = try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket), isolation: isolation)
        #expect(record.state == .ready, "\(record.state)")
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        #expect(await record.plugin?.health().status == "ok")

        let report = try await ScannerEnv.scan(scanner, bed.infected.path)
        #expect(Self.pairs(report) == Self.expected)
        #expect(report.findings.allSatisfy { $0.category == "malware" && $0.severity == "high" })
        #expect(report.clean == false)
        #expect(report.scanner == "clamav")
        #expect(report.filesScanned == 4, "evil.bin, eicar.com, hostname, hello: no symbolic link")
        #expect(report.bytesScanned == Int64(4096 + 68 + "alice-box\n".utf8.count + "#!/bin/sh\necho hello\n".utf8.count))
        #expect(report.scannerVersion?.hasPrefix("clamd 1.") == true, "\(report.scannerVersion ?? "-")")
        #expect(report.databases?["signatures"]?.status == "ok")
        #expect(report.databases?["signatures"]?.detail?.contains(clamd.socket) == true)
        #expect(report.notes == nil, "\(report.notes ?? [])")
        #expect(report.durationMs != nil)
        print("clamav/clamd (\(isolation)): \(report.filesScanned ?? 0) files, \(report.bytesScanned ?? 0) bytes, \(report.findings.count) findings, \(report.durationMs ?? -1) ms")

        let clean = try await ScannerEnv.scan(scanner, bed.clean.path)
        #expect(clean.clean)
        #expect(clean.findings.isEmpty)
        #expect(clean.filesScanned == 4)
        #expect(clean.bytesScanned == Int64(100_060), "100000 + 32 + 20 + 8 bytes")
        print("clamav/clamd clean tree (\(isolation)): \(clean.filesScanned ?? 0) files, \(clean.durationMs ?? -1) ms")

        // The whole roots directory: the links to the outside copy are still not followed.
        let all = try await ScannerEnv.scan(scanner, bed.roots.path)
        #expect(Self.pairs(all) == Self.expected.map { "/containers/alice/rootfs" + $0 })
        #expect(all.filesScanned == 8)

        // clamd stops: the same scan runs with clamscan, finds the same and says so.
        clamd.stop()
        #expect(!(ClamdFixture.ask(clamd.socket, "zPING")?.hasPrefix("PONG") == true))
        let health = await record.plugin?.health()
        #expect(health?.status == "degraded", "\(health?.detail ?? "")")
        let fallback = try await ScannerEnv.scan(scanner, bed.infected.path)
        #expect(Self.pairs(fallback) == Self.expected)
        #expect(fallback.clean == false)
        #expect(fallback.scannerVersion?.hasPrefix("clamscan 1.") == true, "\(fallback.scannerVersion ?? "-")")
        #expect(fallback.notes?.contains("clamd not reachable at \(clamd.socket): scanned with clamscan") == true, "\(fallback.notes ?? [])")
        #expect(fallback.filesScanned == 4)
        #expect(fallback.databases?["signatures"]?.detail?.contains("containarium-test.hdb") == true)
        let fallbackClean = try await ScannerEnv.scan(scanner, bed.clean.path)
        #expect(fallbackClean.clean && fallbackClean.findings.isEmpty)
        print("clamav/clamscan fallback (\(isolation)): \(fallback.filesScanned ?? 0) files, \(fallback.durationMs ?? -1) ms; clean tree \(fallbackClean.durationMs ?? -1) ms")
    }

    @Test("a larger tree (3,000 files, 8 levels deep): every file counted, the same findings as clamdscan --fdpass against the same clamd")
    func largerTree() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let clamd = try ClamdFixture(in: bed.work.appendingPathComponent("clamd"), database: bed.database)
        defer { clamd.stop() }
        let tree = bed.roots.appendingPathComponent("containers/carol/rootfs")
        let planted = try Data(contentsOf: bed.infected.appendingPathComponent("home/alice/evil.bin"))
        var expected: [String] = []
        var bytes: Int64 = 0
        for i in 0..<3000 {
            // Spread over nested directories: d3/d1/d4/… up to 8 levels.
            let depth = i % 8
            let dirs = (0...depth).map { "d\((i / (depth + 1) + $0) % 5)" }.joined(separator: "/")
            let path = "/\(dirs)/f\(i).txt"
            var data = Data("file \(i) of a larger tree\n".utf8)
            if i % 1000 == 7 {
                data = planted
                expected.append("\(path) Containarium-Test-Signature")
            } else if i % 1000 == 500 {
                data = Scanners.eicar
                expected.append("\(path) Eicar-Test-Signature")
            }
            bytes += Int64(data.count)
            try ScannerEnv.write(data, to: URL(fileURLWithPath: tree.path + path))
        }
        let record = try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket))
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        let report = try await ScannerEnv.scan(scanner, tree.path)
        #expect(report.filesScanned == 3000)
        #expect(report.bytesScanned == bytes)
        #expect(Self.pairs(report) == expected.sorted())
        #expect(report.notes == nil, "\(report.notes ?? [])")

        // ClamAV's own client, the same clamd, the same tree.
        let started = Date()
        let theirs = try Run.run("/usr/bin/clamdscan", ["--fdpass", "--config-file=\(clamd.config)", "--no-summary", "--infected", tree.path])
        let theirSeconds = Date().timeIntervalSince(started)
        #expect(theirs.status == 1, "\(theirs.output)")
        let theirPairs = theirs.stdout.split(separator: "\n").compactMap { line -> String? in
            guard let sep = line.range(of: ": ", options: .backwards), line.hasSuffix(" FOUND") else { return nil }
            let name = line[sep.upperBound...].dropLast(" FOUND".count).replacingOccurrences(of: ".UNOFFICIAL", with: "")
            return "\(String(line[..<sep.lowerBound]).dropFirst(tree.path.count)) \(name)"
        }
        #expect(theirPairs.sorted() == Self.pairs(report))
        print("clamav/clamd larger tree: \(report.filesScanned ?? 0) files, \(report.bytesScanned ?? 0) bytes, \(report.findings.count) findings, "
              + "\(report.durationMs ?? -1) ms (clamdscan --fdpass: \(Int(theirSeconds * 1000)) ms)")
    }

    @Test("a clamd that stops answering: the deadline ends the scan (timeout), and the host's cancellation ends it (cancelled)")
    func deadlineAndCancel() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let clamd = try ClamdFixture(in: bed.work.appendingPathComponent("clamd"), database: bed.database)
        defer { clamd.stop() }
        // The real clamd, stopped (SIGSTOP): it still accepts connections, but answers nothing.
        kill(clamd.pid, SIGSTOP)
        defer { kill(clamd.pid, SIGCONT) }
        let record = try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket, ["timeoutSeconds": .number(2)]))
        let scanner = try #require(record.plugin.flatMap(ScannerClient.init))
        let started = Date()
        do {
            _ = try await scanner.scan(.object(["path": .string(bed.infected.path)]))
            Issue.record("a scan against a clamd that answers nothing succeeded")
        } catch {
            #expect(error.code == .timeout, "\(error)")
            #expect(error.message.contains("2 s"), "\(error.message)")
        }
        let took = Date().timeIntervalSince(started)
        #expect(took >= 2 && took < 10, "the deadline took \(took) s")

        let patient = try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket))
        let slow = try #require(patient.plugin.flatMap(ScannerClient.init))
        let task = Task { try await slow.scan(.object(["path": .string(bed.infected.path)])) }
        try await Task.sleep(for: .milliseconds(500))
        let cancelled = Date()
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("a cancelled scan succeeded")
        } catch let error as ContainariumError {
            #expect(error.code == .cancelled, "\(error)")
        }
        #expect(Date().timeIntervalSince(cancelled) < 5)
    }

    @Test("paths outside the roots are refused with permission_denied, naming the path and the roots")
    func confinement() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let clamd = try ClamdFixture(in: bed.work.appendingPathComponent("clamd"), database: bed.database)
        defer { clamd.stop() }
        let scanner = try #require(try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket)).plugin.flatMap(ScannerClient.init))
        for path in [bed.outside.path, "/etc", bed.roots.path + "/../outside", bed.roots.appendingPathComponent("escape").path, "/"] {
            do {
                _ = try await scanner.scan(.object(["path": .string(path)]))
                Issue.record("scanning \(path) outside the roots succeeded")
            } catch {
                #expect(error.code == .permissionDenied, "\(path): \(error)")
                #expect(error.message.contains(path) && error.message.contains(bed.roots.path), "\(error.message)")
            }
        }
        // Inside the roots but missing: not_found; a file: invalid_argument; no path at all: invalid_argument.
        do {
            _ = try await scanner.scan(.object(["path": .string(bed.roots.path + "/nope")]))
            Issue.record("scanning a missing directory succeeded")
        } catch {
            #expect(error.code == .notFound, "\(error)")
        }
        do {
            _ = try await scanner.scan(.object(["path": .string(bed.infected.appendingPathComponent("etc/hostname").path)]))
            Issue.record("scanning a file succeeded")
        } catch {
            #expect(error.code == .invalidArgument)
        }
        do {
            _ = try await scanner.scan(.object(["nopath": .number(1)]))
            Issue.record("a request without path was accepted")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }

    @Test("files over maxFileBytes are skipped and said so; no signatures fails (failed_precondition), never clean")
    func limitsAndMissingDatabase() async throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let clamd = try ClamdFixture(in: bed.work.appendingPathComponent("clamd"), database: bed.database)
        defer { clamd.stop() }
        // 100 bytes: EICAR (68) is scanned, evil.bin (4096) is not.
        let small = try ScannerEnv.load("clamav", plugins: bed.plugins, config: bed.config(socket: clamd.socket, ["maxFileBytes": .number(100)]))
        let report = try await ScannerEnv.scan(try #require(small.plugin.flatMap(ScannerClient.init)), bed.infected.path)
        #expect(Self.pairs(report) == ["/tmp/eicar.com Eicar-Test-Signature"])
        #expect(report.filesScanned == 3)
        let note = report.notes?.first { $0.contains("larger than maxFileBytes") }
        #expect(note?.hasPrefix("1 file larger than maxFileBytes (100 bytes) not scanned: /home/alice/evil.bin (4096 bytes)") == true, "\(report.notes ?? [])")

        // No clamd and an empty database directory: the scan fails instead of reporting clean.
        let empty = bed.work.appendingPathComponent("empty-db")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let nodb = try ScannerEnv.load(
            "clamav", plugins: bed.plugins,
            config: bed.config(socket: bed.work.appendingPathComponent("no-clamd.sock").path, ["databaseDirectory": .string(empty.path)]))
        let scanner = try #require(nodb.plugin.flatMap(ScannerClient.init))
        do {
            _ = try await scanner.scan(.object(["path": .string(bed.clean.path)]))
            Issue.record("a scan without signatures succeeded")
        } catch {
            #expect(error.code == .failedPrecondition, "\(error)")
            #expect(error.message.contains("freshclam") && error.message.contains(empty.path), "\(error.message)")
        }
        #expect(await nodb.plugin?.health().status == "down")
    }

    @Test("unknown or out-of-range configuration fails initialize with a clear message")
    func configuration() throws {
        let bed = try Bed()
        defer { bed.cleanup() }
        let cases: [(JSONValue, String)] = [
            (.object(["clamdSokcet": .string("/x")]), "unknown key 'clamdSokcet'"),
            (.object(["parallel": .number(0)]), "parallel must be between 1 and 64"),
            (.object(["roots": .array([.string("relative/path")])]), "roots must be an absolute path"),
            (.object(["maxFileBytes": .string("big")]), "maxFileBytes"),
            (.array([]), "must be a JSON object"),
        ]
        for (config, message) in cases {
            let record = try ScannerEnv.load("clamav", plugins: bed.plugins, config: config)
            guard case .failed(let why) = record.state else {
                Issue.record("config \(config) was accepted")
                continue
            }
            #expect(why.contains("initialization failed") && why.contains(message), "\(why)")
        }
    }
}
