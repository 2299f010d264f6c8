using RaySharp.Rpc.Protocol;
using RaySharp.Rpc.Transport;

namespace RaySharp.Gcs;

/// <summary>
/// Notices drivers that go away: each driver registers over a framed connection it keeps for its whole life, so its
/// exit, even by SIGKILL, closes the connection and ends its job here (and with it the actors the job owns).
/// </summary>
internal sealed class GcsDriverMonitor(GcsJobManager jobs) : IFramedHandler
{
    public ValueTask<ReadOnlyMemory<byte>> HandleAsync(int method, byte[] payload, CancellationToken cancellationToken)
    {
        if (method != FramedMethods.RegisterDriver) throw new NotSupportedException($"the GCS serves no framed method {method}");
        var request = RegisterDriverRequest.Parser.ParseFrom(payload);
        var connection = FramedConnection.Current ?? throw new InvalidOperationException("no connection");
        _ = connection.Completion.ContinueWith(_ => jobs.MarkFinishedAsync(request.JobId), TaskScheduler.Default);
        return ValueTask.FromResult(ReadOnlyMemory<byte>.Empty);
    }
}
