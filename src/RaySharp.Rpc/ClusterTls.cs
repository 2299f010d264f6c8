using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace RaySharp.Rpc;

/// <summary>
/// Mutual TLS between the processes of a cluster: each presents its node's certificate and accepts only peers whose
/// certificate chains to the cluster's CA. Names are not checked: nodes are reached by IP, and the CA is the
/// cluster's own, so whoever holds a certificate it signed is a member. Set with <c>raysharp start --tls-cert
/// --tls-key --tls-ca</c>, which hands the paths to the node's processes in <c>RAYSHARP_TLS_*</c>.
/// </summary>
internal sealed class ClusterTls
{
    public const string CertEnvironmentVariable = "RAYSHARP_TLS_CERT";
    public const string KeyEnvironmentVariable = "RAYSHARP_TLS_KEY";
    public const string CaEnvironmentVariable = "RAYSHARP_TLS_CA";

    private ClusterTls(string certPath, string keyPath, string caPath, X509Certificate2 certificate, X509Certificate2Collection authorities)
    {
        CertPath = certPath;
        KeyPath = keyPath;
        CaPath = caPath;
        Certificate = certificate;
        _authorities = authorities;
    }

    public string CertPath { get; }
    public string KeyPath { get; }
    public string CaPath { get; }

    /// <summary>This process's certificate, with its private key.</summary>
    public X509Certificate2 Certificate { get; }

    private readonly X509Certificate2Collection _authorities;

    /// <summary>The three files, checked now so that a mistake is reported where it was made, naming the file and the fix.</summary>
    public static ClusterTls Load(string certPath, string keyPath, string caPath)
    {
        certPath = Path.GetFullPath(certPath);
        keyPath = Path.GetFullPath(keyPath);
        caPath = Path.GetFullPath(caPath);
        foreach (var (file, what) in new[] { (certPath, "certificate (--tls-cert)"), (keyPath, "private key (--tls-key)"), (caPath, "CA certificate (--tls-ca)") })
        {
            if (!File.Exists(file)) throw new InvalidOperationException($"the TLS {what} {file} does not exist; make a CA and node certificates with `raysharp tls generate`.");
        }
        X509Certificate2 certificate;
        try
        {
            certificate = X509Certificate2.CreateFromPemFile(certPath, keyPath);
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or ArgumentException)
        {
            throw new InvalidOperationException($"cannot load the TLS certificate {certPath} with the key {keyPath}: {e.Message}. Both must be PEM files, the key the certificate's own.", e);
        }
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caPath);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new InvalidOperationException($"cannot read the CA certificate {caPath}: {e.Message}. It must be a PEM file.", e);
        }
        if (authorities.Count == 0) throw new InvalidOperationException($"the CA file {caPath} holds no certificate.");
        var tls = new ClusterTls(certPath, keyPath, caPath, certificate, authorities);
        if (!tls.IsMember(certificate))
            throw new InvalidOperationException($"the certificate {certPath} is not signed by the CA in {caPath} (or has expired): give this node a certificate of the cluster's CA.");
        return tls;
    }

    /// <summary>From <c>RAYSHARP_TLS_CERT</c>, <c>_KEY</c> and <c>_CA</c>: null when none is set; all three or an error.</summary>
    public static ClusterTls? FromEnvironment()
    {
        var cert = Environment.GetEnvironmentVariable(CertEnvironmentVariable);
        var key = Environment.GetEnvironmentVariable(KeyEnvironmentVariable);
        var ca = Environment.GetEnvironmentVariable(CaEnvironmentVariable);
        if (string.IsNullOrEmpty(cert) && string.IsNullOrEmpty(key) && string.IsNullOrEmpty(ca)) return null;
        if (string.IsNullOrEmpty(cert) || string.IsNullOrEmpty(key) || string.IsNullOrEmpty(ca))
            throw new InvalidOperationException($"TLS needs all three of {CertEnvironmentVariable}, {KeyEnvironmentVariable} and {CaEnvironmentVariable} (the node's certificate, its key, the cluster's CA); some are unset.");
        return Load(cert, key, ca);
    }

    /// <summary>The file of a session directory that names the node's TLS files, for drivers and commands on the node.</summary>
    public static string PathIn(Common.SessionDirectory session) => Path.Combine(session.Path, "tls");

    /// <summary>Records where this node's TLS files are (paths only: the key stays where the user keeps it).</summary>
    public void WriteTo(Common.SessionDirectory session) =>
        File.WriteAllLines(PathIn(session), [CertPath, KeyPath, CaPath]);

    /// <summary>The TLS files a node recorded, or null when it runs without TLS.</summary>
    public static ClusterTls? ReadFrom(Common.SessionDirectory session)
    {
        var file = PathIn(session);
        if (!File.Exists(file)) return null;
        var lines = File.ReadAllLines(file);
        if (lines.Length < 3) throw new InvalidOperationException($"{file} should name the node's TLS certificate, key and CA, one per line.");
        return Load(lines[0], lines[1], lines[2]);
    }

    /// <summary>The variables that hand these files to a child process.</summary>
    public IEnumerable<KeyValuePair<string, string>> ChildEnvironment() =>
    [
        new(CertEnvironmentVariable, CertPath),
        new(KeyEnvironmentVariable, KeyPath),
        new(CaEnvironmentVariable, CaPath),
    ];

    /// <summary>Whether <paramref name="peer"/> chains to the cluster's CA (and is within its validity period).</summary>
    public bool IsMember(X509Certificate? peer)
    {
        if (peer is null) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        var certificate = peer as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(peer.GetRawCertData());
        return chain.Build(certificate);
    }

    private const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    /// <summary>For a framed-only listener: the node's certificate, a client certificate of the cluster required.</summary>
    public SslServerAuthenticationOptions ServerOptions() => new()
    {
        ServerCertificate = Certificate,
        ClientCertificateRequired = true,
        EnabledSslProtocols = Protocols,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, peer, _, _) => IsMember(peer),
    };

    /// <summary>For any client: present the node's certificate, accept servers of the cluster only.</summary>
    public SslClientAuthenticationOptions ClientOptions(string host, bool http2 = false) => new()
    {
        TargetHost = host,
        ClientCertificates = new X509CertificateCollection { Certificate },
        EnabledSslProtocols = Protocols,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        RemoteCertificateValidationCallback = (_, peer, _, _) => IsMember(peer),
        ApplicationProtocols = http2 ? [SslApplicationProtocol.Http2] : null,
    };
}
