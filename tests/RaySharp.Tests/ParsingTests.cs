using RaySharp.Common;

namespace RaySharp.Tests;

public sealed class ParsingTests
{
    [Theory]
    [InlineData("10.0.0.1:6379", "10.0.0.1", 6379)]
    [InlineData("10.0.0.1", "10.0.0.1", 6379)]
    [InlineData("head.example:7000", "head.example", 7000)]
    [InlineData("[fd00::1]:6380", "fd00::1", 6380)]
    public void AddressesParse(string text, string host, int port)
    {
        Assert.True(NodeAddress.TryParse(text, out var h, out var p, out var error), error);
        Assert.Equal(host, h);
        Assert.Equal(port, p);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("10.0.0.1:99999", "not a port number")]
    [InlineData("10.0.0.1:abc", "not a port number")]
    [InlineData("http://10.0.0.1:6379", "scheme")]
    [InlineData(":6379", "does not name a host")]
    public void BadAddressesSayWhy(string text, string expected)
    {
        Assert.False(NodeAddress.TryParse(text, out _, out _, out var error));
        Assert.Contains(expected, error);
    }

    [Fact]
    public void ResourcesParseAndMatch()
    {
        Assert.True(ResourceSet.TryParseJson("{\"accelerator\": 2, \"ssd\": 0.5}", out var r, out var error), error);
        Assert.Equal(2, r["accelerator"]);
        Assert.Equal(0.5, r["ssd"]);
        Assert.True(ResourceSet.Fits(new Dictionary<string, double> { ["accelerator"] = 2 }, r));
        Assert.False(ResourceSet.Fits(new Dictionary<string, double> { ["accelerator"] = 2.5 }, r));
        Assert.False(ResourceSet.Fits(new Dictionary<string, double> { ["GPU"] = 1 }, r));
        Assert.True(ResourceSet.Fits(new Dictionary<string, double> { ["GPU"] = 0 }, r));
    }
}
