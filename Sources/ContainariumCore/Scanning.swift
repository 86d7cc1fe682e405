import Foundation

// scanner/1 and filesystem/1 (docs/schemas/scanner-1.schema.json, filesystem-1.schema.json).

/// scanner/1 `scan`: scan the tree at a host path (an environment's root filesystem, from its
/// backend's filesystem/1). A scanner refuses paths outside the roots its configuration allows.
public struct ScanRequest: Codable, Sendable, Equatable {
    /// The host path of the tree to scan.
    public var path: String
    /// The instance whose filesystem `path` is, for the report.
    public var instance: String?
    public init(path: String, instance: String? = nil) {
        self.path = path
        self.instance = instance
    }
}

/// One finding. `path` is as seen from inside the environment ("/home/alice/.ssh/id_rsa"):
/// the scanned root is stripped.
public struct ScanFinding: Codable, Sendable, Equatable {
    public var path: String
    /// A stable rule or signature id ("Eicar-Test-Signature", "private-key", "CVE-2024-1234").
    public var rule: String
    public var line: Int?
    /// "low", "medium", "high", "critical".
    public var severity: String?
    /// "malware", "secret", "vulnerability", "misconfiguration".
    public var category: String?
    public var title: String?
    /// Vulnerabilities: the package and its versions.
    public var package: String?
    public var installedVersion: String?
    public var fixedVersion: String?
    public init(path: String, rule: String, line: Int? = nil, severity: String? = nil, category: String? = nil, title: String? = nil,
                package: String? = nil, installedVersion: String? = nil, fixedVersion: String? = nil) {
        self.path = path
        self.rule = rule
        self.line = line
        self.severity = severity
        self.category = category
        self.title = title
        self.package = package
        self.installedVersion = installedVersion
        self.fixedVersion = fixedVersion
    }
}

/// The state of a scanner's signature or vulnerability database, said plainly: a scan without
/// its database is never reported as an empty success.
public struct ScanDatabase: Codable, Sendable, Equatable {
    /// "ok" or "missing".
    public var status: String
    /// What it is and where ("ClamAV signatures in /var/lib/clamav (daily 27000)"), or what is missing and how to get it.
    public var detail: String?
    public var version: String?
    public init(status: String, detail: String? = nil, version: String? = nil) {
        self.status = status
        self.detail = detail
        self.version = version
    }
}

/// scanner/1 `scan`'s answer.
public struct ScanReport: Codable, Sendable, Equatable {
    public var scanner: String
    public var target: String?
    public var filesScanned: Int?
    public var bytesScanned: Int64?
    /// True only when everything scanned was clean (and something was scanned with a database).
    public var clean: Bool
    public var findings: [ScanFinding]
    /// "clamd 1.4.3", "clamscan 1.4.3", "trivy 0.76.0".
    public var scannerVersion: String?
    /// Per kind of check ("signatures", "vulnerabilities", "secrets"): its database's state.
    public var databases: [String: ScanDatabase]?
    /// What the scan could not do (files it could not read, checks skipped), in words.
    public var notes: [String]?
    public var durationMs: Int?
    public init(scanner: String, target: String? = nil, filesScanned: Int? = nil, bytesScanned: Int64? = nil, clean: Bool, findings: [ScanFinding],
                scannerVersion: String? = nil, databases: [String: ScanDatabase]? = nil, notes: [String]? = nil, durationMs: Int? = nil) {
        self.scanner = scanner
        self.target = target
        self.filesScanned = filesScanned
        self.bytesScanned = bytesScanned
        self.clean = clean
        self.findings = findings
        self.scannerVersion = scannerVersion
        self.databases = databases
        self.notes = notes
        self.durationMs = durationMs
    }
}

/// filesystem/1 `locate`: where the host can read an instance's root filesystem.
public struct FilesystemLocation: Codable, Sendable, Equatable {
    /// A host directory holding the instance's root filesystem ("/" inside it).
    public var path: String
    /// "directory" (a tree the host reads directly).
    public var kind: String
    public init(path: String, kind: String = "directory") {
        self.path = path
        self.kind = kind
    }
}
