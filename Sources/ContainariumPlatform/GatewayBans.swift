public import ContainariumCore
public import ContainariumStore
import Foundation

/// The SSH gateway's brute-force bans (kept in the store, shared by every gateway on it).
extension ControlPlane {
    /// The addresses the gateways refuse now (admin).
    public func gatewayBans(_ caller: Caller) async throws(ContainariumError) -> [GatewayBanRecord] {
        try requireAdmin(caller, "listing the gateway's bans")
        return try await store.activeBans()
    }

    /// Lift a ban (admin; audited as gateway.unban). `.notFound` when the address is not banned.
    public func liftGatewayBan(_ caller: Caller, address: String) async throws(ContainariumError) {
        try await audited(caller, "gateway.unban", address) { () async throws(ContainariumError) in
            try requireAdmin(caller, "lifting a gateway ban")
            guard !address.isEmpty, address.count <= 64, address.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else {
                throw .invalid("'\(address)' is not an IP address")
            }
            guard try await store.deleteBan(address) else { throw .notFound("\(address) is not banned") }
        }
    }
}
