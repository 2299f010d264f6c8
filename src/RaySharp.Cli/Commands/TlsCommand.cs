using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using RaySharp.Common;
using Spectre.Console;

namespace RaySharp.Cli.Commands;

/// <summary>
/// <c>raysharp tls generate</c>: a CA of the cluster's own and node certificates it signs, as PEM files, for trying
/// mutual TLS (<c>start --tls-cert --tls-key --tls-ca</c>). Production clusters may use any CA; RaySharp checks only
/// that a peer's certificate chains to the CA it is given.
/// </summary>
internal static class TlsCommand
{
    private static readonly Oid s_serverAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid s_clientAuth = new("1.3.6.1.5.5.7.3.2");

    public static int Generate(string outDir, string name, IReadOnlyList<string> addresses)
    {
        if (name.Length == 0 || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name is "ca")
            throw new CliException($"--name '{name}' cannot name the certificate's files; use letters, digits and dashes (and not 'ca').");
        foreach (var a in addresses)
        {
            if (!IPAddress.TryParse(a, out _) && Uri.CheckHostName(a) != UriHostNameType.Dns)
                throw new CliException($"--ip-address '{a}' is neither an IP address nor a host name.");
        }
        Directory.CreateDirectory(outDir);
        var caCert = Path.Combine(outDir, "ca.crt");
        var caKey = Path.Combine(outDir, "ca.key");
        X509Certificate2 ca;
        var madeCa = false;
        if (File.Exists(caCert) && File.Exists(caKey))
        {
            try
            {
                ca = X509Certificate2.CreateFromPemFile(caCert, caKey);
            }
            catch (CryptographicException e)
            {
                throw new CliException($"{caCert} and {caKey} are not a CA certificate and its key ({e.Message}); remove them to make a new CA, or give another --out.");
            }
        }
        else
        {
            ca = MakeCa(caKey);
            File.WriteAllText(caCert, ca.ExportCertificatePem() + "\n");
            madeCa = true;
        }
        using (ca)
        {
            var (certFile, keyFile) = (Path.Combine(outDir, name + ".crt"), Path.Combine(outDir, name + ".key"));
            using var node = MakeNode(ca, name, addresses, keyFile);
            File.WriteAllText(certFile, node.ExportCertificatePem() + "\n");
            AnsiConsole.MarkupLineInterpolated($"{(madeCa ? "Made a new CA" : "Used the CA")} in {caCert} (its key {caKey}, mode 0600: keep it off the nodes).");
            AnsiConsole.MarkupLineInterpolated($"Node certificate {certFile}, key {keyFile} (mode 0600), for TLS servers and clients alike.");
            AnsiConsole.WriteLine("Copy ca.crt and a node certificate with its key to every node (one certificate may serve every node), then start each with");
            AnsiConsole.MarkupLineInterpolated($"  raysharp start ... --tls-cert={certFile} --tls-key={keyFile} --tls-ca={caCert}");
            AnsiConsole.WriteLine("Drivers and commands on a node use the node's files by themselves; elsewhere set RAYSHARP_TLS_CERT, RAYSHARP_TLS_KEY and RAYSHARP_TLS_CA.");
        }
        return 0;
    }

    private static X509Certificate2 MakeCa(string keyFile)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=RaySharp cluster CA", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        var now = DateTimeOffset.UtcNow;
        Posix.WritePrivateFile(keyFile, key.ExportPkcs8PrivateKeyPem() + "\n");
        return request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
    }

    private static X509Certificate2 MakeNode(X509Certificate2 ca, string name, IReadOnlyList<string> addresses, string keyFile)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=RaySharp node {name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([s_serverAuth, s_clientAuth], critical: false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(name);
        foreach (var a in addresses)
        {
            if (IPAddress.TryParse(a, out var ip)) names.AddIpAddress(ip);
            else names.AddDnsName(a);
        }
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        var now = DateTimeOffset.UtcNow;
        using var signed = request.Create(ca, now.AddMinutes(-5), now.AddYears(2), serial);
        Posix.WritePrivateFile(keyFile, key.ExportPkcs8PrivateKeyPem() + "\n");
        return X509CertificateLoader.LoadCertificate(signed.RawData);
    }
}
