import ContainariumCore
import Foundation

/// Windows Setup's answer file for an unattended install of Windows Server 2022 or 2025 on
/// QEMU: virtio storage and network drivers from the driver ISO, the whole disk for Windows,
/// the administrator password, the computer name, Remote Desktop on with Network Level
/// Authentication, and the firewall's Remote Desktop rules enabled.
///
/// The password appears exactly once, in `<AdministratorPassword><Value>`; nothing else in the
/// file is secret, so the file may be inspected without the password if that element is removed.
enum Unattend {
    struct Settings: Sendable {
        var computerName: String
        var administratorPassword: String
        /// "2k22" or "2k25": the virtio-win driver directory for this Windows version.
        var driverDirectory: String
        var imageIndex: Int = 2  // Standard with Desktop Experience on the Server ISOs
        var timeZone = "UTC"
    }

    /// A NetBIOS computer name from the instance name: at most 15 of A-Z 0-9 -.
    static func computerName(for instance: String) -> String {
        let cleaned = instance.uppercased().unicodeScalars.map { ("A"..."Z").contains($0) || ("0"..."9").contains($0) ? Character($0) : "-" }
        var name = String(String(cleaned).prefix(15))
        while name.hasSuffix("-") { name.removeLast() }
        return name.isEmpty ? "CONTAINARIUM" : name
    }

    /// A password Windows' complexity rules accept: 24 characters with upper and lower case
    /// letters, digits and symbols, from the system's cryptographic random source.
    static func generatePassword(length: Int = 24) -> String {
        let upper = Array("ABCDEFGHJKLMNPQRSTUVWXYZ"), lower = Array("abcdefghijkmnopqrstuvwxyz"), digits = Array("23456789"), symbols = Array("!#%+-.=?@_")
        let all = upper + lower + digits + symbols
        var rng = SystemRandomNumberGenerator()
        var chars = [upper.randomElement(using: &rng), lower.randomElement(using: &rng), digits.randomElement(using: &rng), symbols.randomElement(using: &rng)]
            .compactMap { $0 }
        while chars.count < length { if let c = all.randomElement(using: &rng) { chars.append(c) } }
        chars.shuffle(using: &rng)
        return String(chars)
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(c)
            }
        }
        return out
    }

    static func xml(_ s: Settings) -> String {
        let arch = #"processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS""#
        let drivers = ["viostor", "NetKVM", "vioscsi", "Balloon"].enumerated().map { i, d in
            #"<PathAndCredentials wcm:action="add" wcm:keyValue="\#(i + 1)"><Path>E:\\#(d)\\#(s.driverDirectory)\amd64</Path></PathAndCredentials>"#
        }.joined(separator: "\n        ")
        return """
            <?xml version="1.0" encoding="utf-8"?>
            <unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
              <settings pass="windowsPE">
                <component name="Microsoft-Windows-PnpCustomizationsWinPE" \(arch)>
                  <DriverPaths>
                    \(drivers)
                  </DriverPaths>
                </component>
                <component name="Microsoft-Windows-International-Core-WinPE" \(arch)>
                  <SetupUILanguage><UILanguage>en-US</UILanguage></SetupUILanguage>
                  <InputLocale>en-US</InputLocale><SystemLocale>en-US</SystemLocale><UILanguage>en-US</UILanguage><UserLocale>en-US</UserLocale>
                </component>
                <component name="Microsoft-Windows-Setup" \(arch)>
                  <DiskConfiguration>
                    <Disk wcm:action="add">
                      <DiskID>0</DiskID>
                      <WillWipeDisk>true</WillWipeDisk>
                      <CreatePartitions>
                        <CreatePartition wcm:action="add"><Order>1</Order><Type>EFI</Type><Size>260</Size></CreatePartition>
                        <CreatePartition wcm:action="add"><Order>2</Order><Type>MSR</Type><Size>16</Size></CreatePartition>
                        <CreatePartition wcm:action="add"><Order>3</Order><Type>Primary</Type><Extend>true</Extend></CreatePartition>
                      </CreatePartitions>
                      <ModifyPartitions>
                        <ModifyPartition wcm:action="add"><Order>1</Order><PartitionID>1</PartitionID><Format>FAT32</Format><Label>System</Label></ModifyPartition>
                        <ModifyPartition wcm:action="add"><Order>2</Order><PartitionID>3</PartitionID><Format>NTFS</Format><Label>Windows</Label><Letter>C</Letter></ModifyPartition>
                      </ModifyPartitions>
                    </Disk>
                  </DiskConfiguration>
                  <ImageInstall>
                    <OSImage>
                      <InstallFrom><MetaData wcm:action="add"><Key>/IMAGE/INDEX</Key><Value>\(s.imageIndex)</Value></MetaData></InstallFrom>
                      <InstallTo><DiskID>0</DiskID><PartitionID>3</PartitionID></InstallTo>
                    </OSImage>
                  </ImageInstall>
                  <UserData><AcceptEula>true</AcceptEula></UserData>
                </component>
              </settings>
              <settings pass="specialize">
                <component name="Microsoft-Windows-Shell-Setup" \(arch)>
                  <ComputerName>\(escape(s.computerName))</ComputerName>
                  <TimeZone>\(escape(s.timeZone))</TimeZone>
                </component>
                <component name="Microsoft-Windows-TerminalServices-LocalSessionManager" \(arch)>
                  <fDenyTSConnections>false</fDenyTSConnections>
                </component>
                <component name="Microsoft-Windows-TerminalServices-RDP-WinStationExtensions" \(arch)>
                  <UserAuthentication>1</UserAuthentication>
                  <SecurityLayer>2</SecurityLayer>
                </component>
                <component name="Networking-MPSSVC-Svc" \(arch)>
                  <FirewallGroups>
                    <FirewallGroup wcm:action="add" wcm:keyValue="RemoteDesktop">
                      <Active>true</Active>
                      <Group>@FirewallAPI.dll,-28752</Group>
                      <Profile>all</Profile>
                    </FirewallGroup>
                  </FirewallGroups>
                </component>
              </settings>
              <settings pass="oobeSystem">
                <component name="Microsoft-Windows-Shell-Setup" \(arch)>
                  <UserAccounts>
                    <AdministratorPassword><Value>\(escape(s.administratorPassword))</Value><PlainText>true</PlainText></AdministratorPassword>
                  </UserAccounts>
                  <OOBE><HideEULAPage>true</HideEULAPage><SkipMachineOOBE>true</SkipMachineOOBE><SkipUserOOBE>true</SkipUserOOBE></OOBE>
                </component>
              </settings>
            </unattend>

            """
    }
}
